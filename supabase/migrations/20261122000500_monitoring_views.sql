-- Monitoring views: the Edge Function's four monitoring queries, kept next to the data.
--
-- All are security_invoker (PostgreSQL 15+): they run with the caller's privileges, so row
-- level security applies -- an app user sees only the syncs of their own accounts, the service
-- role and the owner see everything. Differences from the seed's SQL, and why:
--  * the seed filtered sync_type = 'scheduled'; here sync_type is full/incremental and the
--    scheduled/manual/backfill distinction is the `trigger` column, exposed so callers filter;
--  * hours are UTC explicitly (the seed's EXTRACT depended on the session's TimeZone);
--  * success rates count finished syncs (success/partial/failed) only: a sync still running,
--    deferred or skipped is neither a success nor a failure;
--  * no LIMIT / ORDER BY inside views (a view's order is not guaranteed): order when querying.
-- Time windows use now(): 7 days for the per-sync and per-hour views, 24 h for success rates.

-- Each sync attempt of the last 7 days, with its account's label.
--   select * from mt5_recent_syncs where trigger = 'scheduled'
--    order by started_at desc limit 100;
create view public.mt5_recent_syncs
with (security_invoker = true) as
select l.started_at,
       l.completed_at,
       l.account_id,
       a.user_id,
       a.login_number,
       a.broker_name,
       a.broker_server,
       l.trigger,
       l.sync_type,
       l.status,
       l.trades_synced,
       l.deals_synced,
       l.duration_ms,
       l.error_code,
       l.error_message,
       l.sync_id,
       l.execution_id,
       l.flow_run_id
  from public.sync_logs l
  join public.trading_accounts a on a.id = l.account_id
 where l.started_at > now() - interval '7 days';

-- Per account over the last 24 hours.
--   select * from mt5_sync_success_rate_24h order by failures desc;
create view public.mt5_sync_success_rate_24h
with (security_invoker = true) as
select a.id as account_id,
       a.user_id,
       a.login_number,
       a.broker_name,
       a.broker_server,
       count(*) as total_syncs,
       count(*) filter (where l.status = 'success') as successes,
       count(*) filter (where l.status = 'partial') as partials,
       count(*) filter (where l.status = 'failed') as failures,
       count(*) filter (where l.status = 'processing') as in_progress,
       count(*) filter (where l.status in ('deferred', 'skipped')) as skipped,
       round(100.0 * count(*) filter (where l.status = 'success')
             / nullif(count(*) filter (where l.status in ('success', 'partial', 'failed')), 0),
             2) as success_rate_pct,
       round(avg(l.duration_ms))::integer as avg_duration_ms,
       max(l.started_at) as last_started_at
  from public.sync_logs l
  join public.trading_accounts a on a.id = l.account_id
 where l.started_at > now() - interval '24 hours'
 group by a.id;

-- Active accounts whose last syncs failed (the counter resets on the next success), with the
-- code and time of the latest failure.
--   select * from mt5_accounts_with_failures order by sync_failure_count desc;
create view public.mt5_accounts_with_failures
with (security_invoker = true) as
select a.id as account_id,
       a.user_id,
       a.login_number,
       a.broker_name,
       a.broker_server,
       a.sync_failure_count,
       a.last_connection_error,
       a.last_sync_at,
       a.last_successful_sync_at,
       f.error_code as last_error_code,
       f.completed_at as last_failed_at
  from public.trading_accounts a
  left join lateral (
        select l.error_code, l.completed_at
          from public.sync_logs l
         where l.account_id = a.id and l.status = 'failed'
         order by l.started_at desc
         limit 1
       ) f on true
 where a.sync_failure_count > 0
   and a.is_active;

-- Finished syncs of the last 7 days by hour of day (UTC).
--   select * from mt5_sync_performance_by_hour order by hour_utc;
create view public.mt5_sync_performance_by_hour
with (security_invoker = true) as
select extract(hour from l.started_at at time zone 'UTC')::integer as hour_utc,
       count(*) as sync_count,
       count(*) filter (where l.status = 'failed') as failures,
       round(avg(l.duration_ms))::integer as avg_duration_ms,
       max(l.duration_ms) as max_duration_ms,
       percentile_cont(0.95) within group (order by l.duration_ms)::integer as p95_duration_ms,
       sum(l.trades_synced) as total_trades_synced,
       sum(l.deals_synced) as total_deals_synced
  from public.sync_logs l
 where l.started_at > now() - interval '7 days'
   and l.completed_at is not null
 group by 1;

-- Read-only for the app and the backend (Supabase's default privileges would grant more).
revoke all on table
    public.mt5_recent_syncs, public.mt5_sync_success_rate_24h,
    public.mt5_accounts_with_failures, public.mt5_sync_performance_by_hour
from public, anon, authenticated, service_role;

grant select on table
    public.mt5_recent_syncs, public.mt5_sync_success_rate_24h,
    public.mt5_accounts_with_failures, public.mt5_sync_performance_by_hour
to authenticated, service_role;
