import {
  AROUND_CUTOVER,
  COLUMNS,
  describeSettings,
  describeTotals,
  type LoadtestReport,
  reportRows,
} from './report.ts'

/**
 * The report as one self-contained HTML file: tables written here, and a latency-over-time chart
 * (p50, p99, max per second, on a log scale, with each move's fence-to-flip marked) drawn as SVG by
 * the inline script from the report's JSON embedded in the page. No network access: it opens from disk
 * and in a headless browser alike. The script sets `data-chart="rendered"` on <body> when it is done.
 */
export function reportHtml(report: LoadtestReport): string {
  const m = report.machine
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchyard load test ${escapeHtml(report.createdAt)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Switchyard load test</h1>
<p class="meta">${escapeHtml(`${report.createdAt} · ${describeSettings(report)} · ${m.cpus} vCPU ${m.cpuModel}, Node ${m.node}, load average ${m.loadAverage.join(' ')}`)}</p>
<ul class="targets">${report.targets
    .map(
      (t) =>
        `<li class="${t.pass ? 'pass' : 'fail'}"><b>${t.pass ? 'PASS' : 'FAIL'}</b> ${escapeHtml(t.name)}: ${escapeHtml(t.measured)}</li>`,
    )
    .join('')}</ul>
<h2>Latency over time</h2>
<div id="latency" class="chart"></div>
<h2>Answers per second</h2>
<div id="throughput" class="chart"></div>
<h2>Per operation (ms, from each request’s scheduled time)</h2>
${htmlTable(reportRows.operations(report), COLUMNS.operations)}
<p>${describeTotals(report).map(escapeHtml).join('<br>')}</p>
<h2>Per shard</h2>
${htmlTable(reportRows.shards(report), COLUMNS.shards)}
${
  report.moves.length
    ? `<h2>Moves during the load</h2>
${htmlTable(reportRows.moves(report), COLUMNS.moves)}
<p>Requests and latency (ms): the moved tenant’s own, ${AROUND_CUTOVER}. flipAtS: seconds into the measured window.</p>`
    : ''
}
<script type="application/json" id="report-data">${embedJson(report)}</script>
<script>${CHART_SCRIPT}</script>
</body>
</html>
`
}

export function htmlTable(rows: Record<string, unknown>[], columns: string[]): string {
  const head = columns.map((c) => `<th>${escapeHtml(c)}</th>`).join('')
  const body = rows
    .map((row) => `<tr>${columns.map((c) => `<td>${escapeHtml(String(row[c] ?? ''))}</td>`).join('')}</tr>`)
    .join('\n')
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`
}

export const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  )

/** JSON inside <script>: `<` escaped so no value can close the element. */
const embedJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c')

export const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1040px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.meta { color: #555; margin: 0 0 12px; }
.targets { list-style: none; padding: 0; } .targets li { padding: 4px 8px; margin: 2px 0; border-radius: 4px; }
.pass { background: #e6f4ea; } .fail { background: #fce8e6; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.chart svg { display: block; background: #fafafa; border: 1px solid #ddd; }
`

/** Plain browser JavaScript (no modules, no libraries): reads the embedded report, draws two SVG charts. */
const CHART_SCRIPT = `
(function () {
  var report = JSON.parse(document.getElementById('report-data').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var W = 1000, M = { left: 60, right: 20, top: 16, bottom: 34 };
  function el(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function frame(id, height) {
    var svg = el('svg', { width: W, height: height, viewBox: '0 0 ' + W + ' ' + height });
    document.getElementById(id).appendChild(svg);
    return svg;
  }
  var points = report.timeline;
  var seconds = Math.max(report.settings.duration, points.length ? points[points.length - 1].t + 1 : 1);
  function x(t) { return M.left + (t / seconds) * (W - M.left - M.right); }
  function xAxis(svg, height) {
    var step = Math.max(1, Math.ceil(seconds / 12 / 5) * 5);
    for (var t = 0; t <= seconds; t += step) {
      el('line', { x1: x(t), x2: x(t), y1: M.top, y2: height - M.bottom, stroke: '#eee' }, svg);
      el('text', { x: x(t), y: height - M.bottom + 16, 'text-anchor': 'middle', 'font-size': 11 }, svg, t + ' s');
    }
  }
  function moves(svg, height, labels) {
    report.moves.forEach(function (move, i) {
      if (move.flippedAt === null) return;
      var from = x(Math.max(0, (move.fencedAt === null ? move.flippedAt : move.fencedAt) / 1000));
      var to = x(move.flippedAt / 1000);
      el('rect', { x: from, y: M.top, width: Math.max(2, to - from), height: height - M.top - M.bottom,
        fill: '#7b1fa2', opacity: 0.25 }, svg);
      el('line', { x1: to, x2: to, y1: M.top, y2: height - M.bottom, stroke: '#7b1fa2', 'stroke-dasharray': '4 3' }, svg);
      if (labels) el('text', { x: to + 4, y: M.top + 12 + 14 * i, 'font-size': 11, fill: '#7b1fa2' }, svg,
        'cutover ' + move.name + ' (' + move.from + ' → ' + move.to + ', stall ' + move.stallMs + ' ms)');
    });
  }
  function latencyChart() {
    var H = 380, svg = frame('latency', H);
    var top = 1;
    points.forEach(function (p) { top = Math.max(top, p.max); });
    top = Math.pow(10, Math.ceil(Math.log10(Math.max(top, 200))));
    var bottom = 0.1;
    function y(ms) {
      var v = Math.log10(Math.max(bottom, ms)) - Math.log10(bottom);
      return H - M.bottom - (v / (Math.log10(top) - Math.log10(bottom))) * (H - M.top - M.bottom);
    }
    xAxis(svg, H);
    for (var tick = bottom; tick <= top; tick *= 10) {
      el('line', { x1: M.left, x2: W - M.right, y1: y(tick), y2: y(tick), stroke: '#ddd' }, svg);
      el('text', { x: M.left - 6, y: y(tick) + 4, 'text-anchor': 'end', 'font-size': 11 }, svg, tick + ' ms');
    }
    el('line', { x1: M.left, x2: W - M.right, y1: y(100), y2: y(100), stroke: '#c62828', 'stroke-dasharray': '6 4' }, svg);
    el('text', { x: W - M.right - 4, y: y(100) - 4, 'text-anchor': 'end', 'font-size': 11, fill: '#c62828' }, svg,
      'seed target: 100 ms');
    moves(svg, H, true);
    var series = [['max', '#ef6c00', 1], ['p99', '#d81b60', 2], ['p50', '#1e88e5', 2]];
    series.forEach(function (s, i) {
      var d = points.map(function (p, j) { return (j ? 'L' : 'M') + x(p.t + 0.5).toFixed(1) + ' ' + y(p[s[0]]).toFixed(1); });
      el('path', { d: d.join(' '), fill: 'none', stroke: s[1], 'stroke-width': s[2] }, svg);
      el('rect', { x: M.left + 10 + i * 70, y: H - 12, width: 12, height: 4, fill: s[1] }, svg);
      el('text', { x: M.left + 26 + i * 70, y: H - 7, 'font-size': 11 }, svg, s[0]);
    });
  }
  function throughputChart() {
    var H = 200, svg = frame('throughput', H);
    var top = 1;
    points.forEach(function (p) { top = Math.max(top, p.requests); });
    function y(n) { return H - M.bottom - (n / top) * (H - M.top - M.bottom); }
    xAxis(svg, H);
    [0, top / 2, top].forEach(function (tick) {
      el('text', { x: M.left - 6, y: y(tick) + 4, 'text-anchor': 'end', 'font-size': 11 }, svg, Math.round(tick) + '/s');
    });
    moves(svg, H, false);
    var width = Math.max(1, x(1) - x(0) - 1);
    points.forEach(function (p) {
      el('rect', { x: x(p.t), y: y(p.requests), width: width, height: y(0) - y(p.requests), fill: '#90caf9' }, svg);
      if (p.errors) el('rect', { x: x(p.t), y: y(p.errors), width: width, height: y(0) - y(p.errors), fill: '#c62828' }, svg);
    });
  }
  latencyChart();
  throughputChart();
  document.body.setAttribute('data-chart', 'rendered');
})();
`
