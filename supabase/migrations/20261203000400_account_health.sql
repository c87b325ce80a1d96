-- Account health: back off from broken accounts, tell a human, freshness as a number (issue 14).
--
-- What lives here, and why it is kept apart from the commit and failure functions:
--  * mt5_account_health, one row per account, is maintained by a trigger on sync_logs when a
--    row reaches a final status (success / partial / failed). Every path that finishes a sync
--    (the scheduled cycle, a manual sync, the API, a backfill) ends in sync_logs, so the trigger
--    sees them all without touching mt5_commit_account_sync / mt5_record_sync_failure.
--  * The triggers run with the writer's rights (security invoker, as every function here):
--    only the backend writes sync_logs and trading_accounts, and it may write these tables.
--  * A change of trading_accounts.investor_password_encrypted (any path: the API, SQL, the
--    dashboard) lifts 'needs_credentials' at once (trigger on trading_accounts).
--  * mt5_server_pauses: a broker-wide outage seen in one cycle pauses that server's accounts.
--  * mt5_account_health_events: an outbox of state changes a human should hear about
--    (needs-credentials, recovered); the cycle drains it and emits Prefect events, so an event
--    is emitted once, whichever path caused the change.
--  * mt5_account_due(): the one predicate "may the scheduled cycle try this account now".
--    Manual syncs never ask it (a human asking for a sync is never blocked by backoff).
--
-- Clock: every stored instant is the sync's own completed_at (the product's clock,
-- mt5_sync.clock), and the functions that compare with "now" take it as p_now from the caller
-- (the product's clock again). The views call them with now(): in production both clocks are
-- the machine's; tests drive the product clock to other dates and call the *_at functions.
--
-- Backoff policy (mt5_backoff_delay), counted in consecutive failures of one kind:
--  * credentials (auth_failed -6, auth_otp_required): 6 h after the first, 24 h after later
--    ones -- brokers throttle or block a source IP after repeated failed logins, for every
--    account at that broker (issue 14); lifted at once when the credentials change;
--  * transient, broker side (terminal timeouts, IPC errors, no answer): none after the first
--    (one timeout is weather), then 5 min doubling per failure, capped at 1 h, with +-20 %
--    jitter derived from the account id (deterministic: every host computes the same, and
--    accounts of one server that failed together come back spread out);
--  * anything else (database errors, bugs, a sync already running): no backoff.

-- ---------------------------------------------------------------- classification and policy
create or replace function public.mt5_failure_kind(p_error_code text) returns text
language sql
immutable
security invoker
set search_path = public, pg_temp
as $$
    select case
        when p_error_code in ('auth_failed', 'auth_otp_required') then 'credentials'
        when p_error_code in ('terminal_timeout', 'terminal_unavailable', 'ipc_timeout',
                              'ipc_error', 'no_result', 'account_mismatch', 'terminal_error')
            then 'transient'
        else 'other'
    end;
$$;

create or replace function public.mt5_backoff_delay(
    p_kind text, p_failures integer, p_account_id uuid
) returns interval
language sql
immutable
security invoker
set search_path = public, pg_temp
as $$
    select case
        when p_kind = 'credentials' then
            case when p_failures <= 1 then interval '6 hours' else interval '24 hours' end
        when p_kind = 'transient' and p_failures >= 2 then
            least(interval '1 hour',
                  interval '5 minutes' * power(2, least(p_failures - 2, 16))::integer)
            * (0.8 + 0.4 * ((hashtext(p_account_id::text || ':' || p_failures) & 1023)
                            / 1023.0))
        else interval '0'
    end;
$$;

-- ---------------------------------------------------------------- tables
create table public.mt5_account_health (
    account_id uuid primary key references public.trading_accounts (id) on delete cascade,
    -- ok | failing (failed, no backoff yet) | backing_off | needs_credentials
    -- | credentials_changed (was needs_credentials; the password changed; due now)
    state text not null,
    failure_kind text,
    consecutive_failures integer not null default 0,
    last_status text not null,
    last_sync_id uuid not null,
    last_error_code text,
    last_error_message text,
    last_outcome_at timestamptz not null,
    failing_since timestamptz,
    next_attempt_at timestamptz,
    constraint mt5_account_health_state_check check (state in
        ('ok', 'failing', 'backing_off', 'needs_credentials', 'credentials_changed'))
);

comment on table public.mt5_account_health is
    'Per account: the latest sync outcome and when the scheduled cycle may try it again '
    '(maintained by triggers on sync_logs and trading_accounts; see mt5_account_due).';

create table public.mt5_server_pauses (
    broker_server text primary key,
    paused_at timestamptz not null,
    paused_until timestamptz not null,
    error_code text not null,
    accounts_failed integer not null,
    accounts_tried integer not null,
    execution_id uuid
);

comment on table public.mt5_server_pauses is
    'Broker servers paused after most of their accounts failed the same transient way in one cycle.';

create table public.mt5_account_health_events (
    id bigint generated always as identity primary key,
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    kind text not null,
    occurred_at timestamptz not null,
    previous_state text,
    error_code text,
    message text,
    next_attempt_at timestamptz,
    sync_id uuid,
    constraint mt5_account_health_events_kind_check check (kind in ('needs-credentials', 'recovered'))
);

-- ---------------------------------------------------------------- triggers
create or replace function public.mt5_track_account_health() returns trigger
language plpgsql
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
declare
    v_old public.mt5_account_health;
    v_at timestamptz := coalesce(new.completed_at, new.started_at);
    v_kind text;
    v_n integer;
    v_delay interval;
    v_state text;
begin
    select * into v_old from public.mt5_account_health where account_id = new.account_id for update;
    if found and v_old.last_outcome_at > v_at then
        return null;  -- an older sync finishing late (a manual beside a scheduled one)
    end if;
    if new.status in ('success', 'partial') then
        insert into public.mt5_account_health as h
            (account_id, state, failure_kind, consecutive_failures, last_status, last_sync_id,
             last_error_code, last_error_message, last_outcome_at, failing_since, next_attempt_at)
        values (new.account_id, 'ok', null, 0, new.status, new.sync_id, new.error_code,
                new.error_message, v_at, null, null)
        on conflict (account_id) do update
           set state = 'ok', failure_kind = null, consecutive_failures = 0,
               last_status = excluded.last_status, last_sync_id = excluded.last_sync_id,
               last_error_code = excluded.last_error_code,
               last_error_message = excluded.last_error_message,
               last_outcome_at = excluded.last_outcome_at,
               failing_since = null, next_attempt_at = null;
        if v_old.state in ('needs_credentials', 'backing_off', 'credentials_changed') then
            insert into public.mt5_account_health_events
                (account_id, kind, occurred_at, previous_state, error_code, message, sync_id)
            values (new.account_id, 'recovered', v_at, v_old.state, v_old.last_error_code,
                    format('synced again after failing since %s (%s)',
                           v_old.failing_since, v_old.last_error_code),
                    new.sync_id);
        end if;
        return null;
    end if;

    -- failed
    v_kind := public.mt5_failure_kind(new.error_code);
    v_n := case when v_old.failure_kind = v_kind then v_old.consecutive_failures + 1 else 1 end;
    v_delay := public.mt5_backoff_delay(v_kind, v_n, new.account_id);
    v_state := case when v_kind = 'credentials' then 'needs_credentials'
                    when v_delay > interval '0' then 'backing_off'
                    else 'failing' end;
    insert into public.mt5_account_health as h
        (account_id, state, failure_kind, consecutive_failures, last_status, last_sync_id,
         last_error_code, last_error_message, last_outcome_at, failing_since, next_attempt_at)
    values (new.account_id, v_state, v_kind, v_n, new.status, new.sync_id, new.error_code,
            new.error_message, v_at, coalesce(v_old.failing_since, v_at),
            case when v_delay > interval '0' then v_at + v_delay end)
    on conflict (account_id) do update
       set state = excluded.state, failure_kind = excluded.failure_kind,
           consecutive_failures = excluded.consecutive_failures,
           last_status = excluded.last_status, last_sync_id = excluded.last_sync_id,
           last_error_code = excluded.last_error_code,
           last_error_message = excluded.last_error_message,
           last_outcome_at = excluded.last_outcome_at,
           failing_since = excluded.failing_since, next_attempt_at = excluded.next_attempt_at;
    if v_state = 'needs_credentials' and v_old.state is distinct from 'needs_credentials' then
        insert into public.mt5_account_health_events
            (account_id, kind, occurred_at, previous_state, error_code, message,
             next_attempt_at, sync_id)
        values (new.account_id, 'needs-credentials', v_at, v_old.state, new.error_code,
                new.error_message, v_at + v_delay, new.sync_id);
    end if;
    return null;
end
$$;

-- On update only when the status really changes: a replayed commit re-writes the same final
-- status and must not count twice.
create trigger sync_logs_track_account_health_insert
    after insert on public.sync_logs
    for each row
    when (new.status in ('success', 'partial', 'failed'))
    execute function public.mt5_track_account_health();
create trigger sync_logs_track_account_health_update
    after update of status on public.sync_logs
    for each row
    when (new.status in ('success', 'partial', 'failed')
          and old.status is distinct from new.status)
    execute function public.mt5_track_account_health();

-- New credentials: try the account at the next cycle. Any path that changes the stored
-- password fires this (the API, SQL, the dashboard); re-writing the same value does not.
create or replace function public.mt5_credentials_changed() returns trigger
language plpgsql
security invoker
set search_path = public, pg_temp
as $$
begin
    update public.mt5_account_health
       set state = 'credentials_changed', next_attempt_at = null
     where account_id = new.id and state = 'needs_credentials';
    return null;
end
$$;

create trigger trading_accounts_credentials_changed
    after update of investor_password_encrypted on public.trading_accounts
    for each row
    when (old.investor_password_encrypted is distinct from new.investor_password_encrypted)
    execute function public.mt5_credentials_changed();

-- ---------------------------------------------------------------- the scheduling predicate
-- Whether the scheduled cycle may try the account at p_now: its own backoff has passed (or it
-- has none) and its server is not paused. The claim query of the cycle uses exactly this.
create or replace function public.mt5_account_due(
    p_account_id uuid, p_broker_server text, p_now timestamptz
) returns boolean
language sql
stable
security invoker
set search_path = public, pg_temp
as $$
    select not exists (select 1 from public.mt5_account_health h
                        where h.account_id = p_account_id and h.next_attempt_at > p_now)
       and not exists (select 1 from public.mt5_server_pauses s
                        where s.broker_server = p_broker_server and s.paused_until > p_now);
$$;

-- Per account: whether the scheduled cycle may try it at p_now, and if not why and when.
--   state: inactive | needs_credentials | server_paused | backing_off | credentials_changed
--          | failing | ok
create or replace function public.mt5_account_schedule_at(
    p_now timestamptz, p_account_ids uuid[] default null
) returns table (
    account_id uuid, state text, reason text, message text, next_attempt_at timestamptz,
    due boolean
)
language sql
stable
security invoker
set search_path = public, pg_temp
as $$
    select a.id,
           case when not a.is_active then 'inactive'
                when h.state = 'needs_credentials' then 'needs_credentials'
                when s.paused_until > p_now then 'server_paused'
                when h.next_attempt_at > p_now then 'backing_off'
                else coalesce(h.state, 'ok') end,
           case when s.paused_until > p_now and h.state is distinct from 'needs_credentials'
                then s.error_code else h.last_error_code end,
           case when not a.is_active then 'account is inactive'
                when h.state = 'needs_credentials' then
                    'the broker rejected the login (' || h.last_error_code || '): update the '
                    || 'investor password; not retried by the schedule until it changes, a '
                    || 'manual sync asks for it, or ' || to_char(h.next_attempt_at at time zone 'UTC',
                                                                 'YYYY-MM-DD HH24:MI "UTC"')
                when s.paused_until > p_now then
                    format('server %s paused: %s of %s accounts failed with %s in one cycle',
                           a.broker_server, s.accounts_failed, s.accounts_tried, s.error_code)
                when h.next_attempt_at > p_now then
                    format('backing off after %s failures in a row (%s)',
                           h.consecutive_failures, h.last_error_code)
                else null end,
           greatest(case when h.next_attempt_at > p_now then h.next_attempt_at end,
                    case when s.paused_until > p_now then s.paused_until end),
           a.is_active and public.mt5_account_due(a.id, a.broker_server, p_now)
      from public.trading_accounts a
      left join public.mt5_account_health h on h.account_id = a.id
      left join public.mt5_server_pauses s on s.broker_server = a.broker_server
     where p_account_ids is null or a.id = any (p_account_ids)
     order by a.id;
$$;

create view public.mt5_account_schedule
with (security_invoker = true) as
select * from public.mt5_account_schedule_at(now());

-- ---------------------------------------------------------------- freshness
-- Per account: staleness_s = p_now - last successful sync (null if never synced), and
--   state: inactive | needs_credentials | backing_off (own backoff or server pause)
--          | stale (over p_slo_s, or never synced) | ok.
create or replace function public.mt5_account_freshness_at(
    p_now timestamptz, p_slo_s integer default 900
) returns table (
    account_id uuid, user_id uuid, login_number bigint, broker_name text, broker_server text,
    is_active boolean, last_successful_sync_at timestamptz, staleness_s double precision,
    state text, reason text, next_attempt_at timestamptz
)
language sql
stable
security invoker
set search_path = public, pg_temp
as $$
    select a.id, a.user_id, a.login_number, a.broker_name, a.broker_server, a.is_active,
           a.last_successful_sync_at,
           extract(epoch from p_now - a.last_successful_sync_at)::double precision,
           case when not a.is_active then 'inactive'
                when s.state = 'needs_credentials' then 'needs_credentials'
                when s.state in ('server_paused', 'backing_off') then 'backing_off'
                when a.last_successful_sync_at is null
                  or p_now - a.last_successful_sync_at > make_interval(secs => p_slo_s)
                    then 'stale'
                else 'ok' end,
           coalesce(s.message, s.reason),
           s.next_attempt_at
      from public.trading_accounts a
      join public.mt5_account_schedule_at(p_now) s on s.account_id = a.id
     order by a.id;
$$;

create view public.mt5_account_freshness
with (security_invoker = true) as
select * from public.mt5_account_freshness_at(now(), 900);

-- ---------------------------------------------------------------- broker-wide outages
-- After a cycle: servers where at least p.min_accounts accounts were tried and at least
-- p.ratio of them failed with one transient code are paused until p.now + p.pause_s.
--   p = {"execution_id", "now", "min_accounts", "ratio", "pause_s"}
-- Returns the servers paused by this call (a server already paused is extended, not
-- reported again: the pause is announced once).
create or replace function public.mt5_pause_failing_servers(p jsonb)
returns table (broker_server text, error_code text, accounts_failed integer,
               accounts_tried integer, paused_until timestamptz)
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
declare
    fn constant text := 'mt5_pause_failing_servers';
    v_execution_id uuid := public.mt5_payload_uuid(p, fn, 'execution_id');
    v_now timestamptz := public.mt5_payload_timestamptz(p, fn, 'now');
    v_min integer := coalesce(public.mt5_payload_text(p, fn, 'min_accounts', false)::integer, 3);
    v_ratio double precision := coalesce(public.mt5_payload_text(p, fn, 'ratio', false)::double precision, 0.8);
    v_pause interval := make_interval(secs => coalesce(
        public.mt5_payload_text(p, fn, 'pause_s', false)::double precision, 600));
begin
    return query
    with tried as (
        select a.broker_server as server, l.status, l.error_code
          from public.sync_logs l
          join public.trading_accounts a on a.id = l.account_id
         where l.execution_id = v_execution_id
           and l.status in ('success', 'partial', 'failed')
    ), worst as (
        select t.server, t.error_code, count(*)::integer as n
          from tried t
         where t.status = 'failed' and public.mt5_failure_kind(t.error_code) = 'transient'
         group by 1, 2
    ), candidates as (
        select distinct on (w.server) w.server, w.error_code, w.n,
               (select count(*)::integer from tried t where t.server = w.server) as total
          from worst w
         order by w.server, w.n desc, w.error_code
    ), upserted as (
        insert into public.mt5_server_pauses as sp
            (broker_server, paused_at, paused_until, error_code, accounts_failed,
             accounts_tried, execution_id)
        select c.server, v_now, v_now + v_pause, c.error_code, c.n, c.total, v_execution_id
          from candidates c
         where c.total >= v_min and c.n >= v_ratio * c.total
        on conflict on constraint mt5_server_pauses_pkey do update
           set paused_until = excluded.paused_until, error_code = excluded.error_code,
               accounts_failed = excluded.accounts_failed,
               accounts_tried = excluded.accounts_tried, execution_id = excluded.execution_id,
               paused_at = case when sp.paused_until > excluded.paused_at then sp.paused_at
                                else excluded.paused_at end
        returning sp.broker_server, sp.error_code, sp.accounts_failed, sp.accounts_tried,
                  sp.paused_until
    )
    -- announced only if the server was not paused already (the CTE below reads the table as
    -- it was before this statement)
    select u.broker_server, u.error_code, u.accounts_failed, u.accounts_tried, u.paused_until
      from upserted u
     where not exists (select 1 from public.mt5_server_pauses o
                        where o.broker_server = u.broker_server and o.paused_until > v_now);
end
$$;

-- The outbox: take up to p_limit events (oldest first), deleting them. Concurrent callers
-- never take the same event (skip locked); each event is emitted by whoever took it.
create or replace function public.mt5_take_health_events(p_limit integer default 100)
returns table (id bigint, account_id uuid, login_number bigint, broker_server text,
               kind text, occurred_at timestamptz, previous_state text, error_code text,
               message text, next_attempt_at timestamptz, sync_id uuid)
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    with taken as (
        delete from public.mt5_account_health_events e
         where e.id in (select x.id from public.mt5_account_health_events x
                         order by x.id limit greatest(1, p_limit) for update skip locked)
        returning e.*
    )
    select t.id, t.account_id, a.login_number, a.broker_server, t.kind, t.occurred_at,
           t.previous_state, t.error_code, t.message, t.next_attempt_at, t.sync_id
      from taken t
      join public.trading_accounts a on a.id = t.account_id
     order by t.id;
$$;

-- ---------------------------------------------------------------- RLS and privileges
-- As for the other tables (20261122000400): service role everything; app users read the
-- health of their own accounts and the pauses of servers they have accounts on.
alter table public.mt5_account_health enable row level security;
alter table public.mt5_server_pauses enable row level security;
alter table public.mt5_account_health_events enable row level security;

create policy mt5_account_health_service_role_all on public.mt5_account_health
    for all to service_role using (true) with check (true);
create policy mt5_server_pauses_service_role_all on public.mt5_server_pauses
    for all to service_role using (true) with check (true);
create policy mt5_account_health_events_service_role_all on public.mt5_account_health_events
    for all to service_role using (true) with check (true);
create policy mt5_account_health_select_own on public.mt5_account_health
    for select to authenticated
    using (account_id in (select a.id from public.trading_accounts a
                           where a.user_id = (select auth.uid())));
create policy mt5_server_pauses_select_own on public.mt5_server_pauses
    for select to authenticated
    using (broker_server in (select a.broker_server from public.trading_accounts a
                              where a.user_id = (select auth.uid())));

revoke all on table public.mt5_account_health, public.mt5_server_pauses,
    public.mt5_account_health_events from public, anon, authenticated;
grant select, insert, update, delete on table public.mt5_account_health,
    public.mt5_server_pauses, public.mt5_account_health_events to service_role;
grant select on table public.mt5_account_health, public.mt5_server_pauses to authenticated;

revoke all on table public.mt5_account_schedule, public.mt5_account_freshness
from public, anon, authenticated, service_role;
grant select on table public.mt5_account_schedule, public.mt5_account_freshness
to authenticated, service_role;

do $grants$
declare
    v_fn text;
begin
    -- Read-only, security invoker (RLS applies): the views need them for app users too.
    foreach v_fn in array array[
        'public.mt5_failure_kind(text)',
        'public.mt5_backoff_delay(text, integer, uuid)',
        'public.mt5_account_due(uuid, text, timestamptz)',
        'public.mt5_account_schedule_at(timestamptz, uuid[])',
        'public.mt5_account_freshness_at(timestamptz, integer)'
    ] loop
        execute format('revoke all on function %s from public, anon', v_fn);
        execute format('grant execute on function %s to authenticated, service_role', v_fn);
    end loop;
    foreach v_fn in array array[
        'public.mt5_pause_failing_servers(jsonb)',
        'public.mt5_take_health_events(integer)',
        'public.mt5_track_account_health()',
        'public.mt5_credentials_changed()'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$grants$;
