-- The seed's tenant limits (max_services, max_staff, max_customers, max_appointments_per_day), enforced
-- on the shard by switchyard.enforce_quota() with the limits the router passes to switchyard.enter().
CREATE TRIGGER services_quota BEFORE INSERT ON "services" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_services');--> statement-breakpoint
CREATE TRIGGER staff_quota BEFORE INSERT ON "staff" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_staff');--> statement-breakpoint
CREATE TRIGGER customers_quota BEFORE INSERT ON "customers" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_customers');--> statement-breakpoint
CREATE TRIGGER appointments_quota BEFORE INSERT ON "appointments" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_appointments_per_day', 'start_time');
