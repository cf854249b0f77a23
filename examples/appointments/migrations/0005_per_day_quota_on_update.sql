-- An UPDATE of start_time could move appointments into a day that is already full: the per-day limit
-- counts that day as an insert would (switchyard.enforce_quota() as a BEFORE UPDATE trigger, core
-- migration 0006); a change within the same UTC day counts nothing.
CREATE TRIGGER appointments_quota_update BEFORE UPDATE OF start_time ON "appointments" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_appointments_per_day', 'start_time');
