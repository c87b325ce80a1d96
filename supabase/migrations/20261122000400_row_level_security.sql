-- Row level security for the app's users, and the staging table of chunked REST commits.
--
-- Who may do what (the Supabase roles; on plain PostgreSQL the compat migration stubs them):
--  * anon           -- nothing at all.
--  * authenticated  -- SELECT of its own rows only: trading_accounts where user_id = auth.uid(),
--                      and the rows of child tables whose account is its own. Never the
--                      encrypted investor password (the table is revoked and only the visible
--                      columns are granted; `select *` therefore fails: name the columns).
--  * service_role   -- everything; it is the sync's identity over the Data API. On Supabase it
--                      has BYPASSRLS; the explicit policies below make it work the same where
--                      it does not (a stub role created by a non-superuser).
-- The direct connection (psycopg) uses the tables' owner, which RLS does not restrict.
--
-- The staging table lives here, not in a migration of its own, so that it is created under the
-- same rules (RLS on, service role only) as every other table.

-- ---------------------------------------------------------------- chunked commit staging
-- One row per chunk of a big commit sent over the Data API (mt5_sync/store/chunks.py): the
-- rows of one part of one sync's payload. Writing here changes no real table; only
-- mt5_commit_staged_account_sync moves them, in one transaction with the cursor.
create table public.sync_commit_chunks (
    sync_id uuid not null,
    part text not null,
    seq integer not null,
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    row_count integer not null,
    rows jsonb not null,
    created_at timestamptz not null default now(),
    constraint sync_commit_chunks_pkey primary key (sync_id, part, seq),
    constraint sync_commit_chunks_part_check
        check (part in ('deals', 'cash_flows', 'closed_trades', 'open_positions', 'quarantine')),
    constraint sync_commit_chunks_seq_check check (seq >= 0),
    constraint sync_commit_chunks_rows_check
        check (jsonb_typeof(rows) = 'array' and row_count = jsonb_array_length(rows))
);

create index sync_commit_chunks_account_created_idx
    on public.sync_commit_chunks (account_id, created_at);

comment on table public.sync_commit_chunks is
    'Chunks of large commits staged over the Data API; emptied by mt5_commit_staged_account_sync.';

-- p is a CommitPayload whose row lists were moved to sync_commit_chunks, plus
-- p.staged = {"<part>": {"chunks": n, "rows": m}, ...}. Checks that exactly the announced chunks
-- are staged, rebuilds the full payload (header rows first, then chunks in seq order, so the
-- order -- which decides "last occurrence wins" and quarantine ordinals -- is the original),
-- commits it with mt5_commit_account_sync and deletes the chunks: all in ONE transaction.
-- Replay: if the chunks are gone because this sync already committed (a lost reply), the stored
-- outcome is returned instead; otherwise missing chunks raise 55000 and the client re-stages.
-- Chunks abandoned for more than a day by this account's earlier syncs are removed too.
create or replace function public.mt5_commit_staged_account_sync(p jsonb) returns jsonb
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
declare
    fn constant text := 'mt5_commit_staged_account_sync';
    v_sync_id uuid := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id uuid := public.mt5_payload_uuid(p, fn, 'account_id');
    v_staged jsonb := public.mt5_payload_object(p, fn, 'staged');
    v_full jsonb := p - 'staged';
    v_part text;
    v_spec jsonb;
    v_chunks integer;
    v_rows integer;
    v_found_chunks integer;
    v_found_rows integer;
    v_missing text;
    v_status text;
    v_result jsonb;
begin
    if v_staged is null then
        raise exception '%: payload field "staged" is required (a JSON object)', fn
            using errcode = 'invalid_parameter_value';
    end if;
    -- Same lock as the commit takes first: the replay check below cannot race a commit.
    perform 1 from public.trading_accounts where id = v_account_id for update;
    if not found then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;

    for v_part, v_spec in select key, value from jsonb_each(v_staged) loop
        if v_part not in ('deals', 'cash_flows', 'closed_trades', 'open_positions', 'quarantine') then
            raise exception '%: cannot stage part "%"', fn, v_part
                using errcode = 'invalid_parameter_value';
        end if;
        begin
            v_chunks := (v_spec ->> 'chunks')::integer;
            v_rows := (v_spec ->> 'rows')::integer;
        exception when invalid_text_representation or numeric_value_out_of_range then
            v_chunks := null;
        end;
        if v_chunks is null or v_rows is null or v_chunks < 0 or v_rows < 0 then
            raise exception '%: staged.% must be {"chunks": n, "rows": m}', fn, v_part
                using errcode = 'invalid_parameter_value';
        end if;
        select count(*), coalesce(sum(c.row_count), 0)
          into v_found_chunks, v_found_rows
          from public.sync_commit_chunks c
         where c.sync_id = v_sync_id and c.part = v_part and c.seq < v_chunks
           and c.account_id = v_account_id;
        if v_found_chunks <> v_chunks or v_found_rows <> v_rows then
            v_missing := format('%s: %s of %s chunks, %s of %s rows',
                                v_part, v_found_chunks, v_chunks, v_found_rows, v_rows);
            exit;
        end if;
        v_full := jsonb_set(
            v_full, array[v_part],
            (case when jsonb_typeof(v_full -> v_part) = 'array' then v_full -> v_part
                  else '[]'::jsonb end)
            || coalesce((select jsonb_agg(e.j order by c.seq, e.ord)
                           from public.sync_commit_chunks c
                          cross join lateral jsonb_array_elements(c.rows)
                                with ordinality as e(j, ord)
                          where c.sync_id = v_sync_id and c.part = v_part and c.seq < v_chunks),
                        '[]'::jsonb));
    end loop;

    if v_missing is not null then
        select l.status into v_status
          from public.sync_logs l
         where l.sync_id = v_sync_id and l.account_id = v_account_id;
        if v_status in ('success', 'partial') then
            delete from public.sync_commit_chunks where sync_id = v_sync_id;
            select jsonb_build_object(
                       'sync_id', l.sync_id,
                       'status', l.status,
                       'trades_synced', l.trades_synced,
                       'deals_synced', l.deals_synced,
                       'cash_flows_synced', coalesce((l.details ->> 'cash_flows')::integer, 0),
                       'quarantined', coalesce((l.details ->> 'quarantined')::integer, 0),
                       'cursor', a.history_cursor)
              into v_result
              from public.sync_logs l
              join public.trading_accounts a on a.id = l.account_id
             where l.sync_id = v_sync_id;
            return v_result;
        end if;
        raise exception '%: staged chunks of sync % are incomplete (%); stage them again',
            fn, v_sync_id, v_missing
            using errcode = 'object_not_in_prerequisite_state';
    end if;

    v_result := public.mt5_commit_account_sync(v_full);
    delete from public.sync_commit_chunks where sync_id = v_sync_id;
    delete from public.sync_commit_chunks
     where account_id = v_account_id and created_at < now() - interval '1 day';
    return v_result;
end
$$;

revoke all on function public.mt5_commit_staged_account_sync(jsonb) from public, anon, authenticated;
grant execute on function public.mt5_commit_staged_account_sync(jsonb) to service_role;

-- ---------------------------------------------------------------- table privileges
revoke all on table public.sync_commit_chunks from anon, authenticated;
grant select, insert, update, delete on table public.sync_commit_chunks to service_role;

-- The visible columns of trading_accounts: everything but the credential and the lease.
revoke all on table public.trading_accounts from anon, authenticated;
grant select (
    id, user_id, login_number, broker_name, broker_server, server_time_rule, is_active,
    currency, leverage, margin_mode, balance, equity, margin, free_margin, margin_level,
    last_sync_at, last_successful_sync_at, sync_failure_count, last_connection_error,
    history_cursor, last_manual_sync_at, created_at, updated_at
) on public.trading_accounts to authenticated;

grant select on table
    public.trades, public.deals, public.cash_flows, public.account_snapshots, public.sync_logs,
    public.sync_quarantine
to authenticated;

-- ---------------------------------------------------------------- row level security
do $rls$
declare
    v_table text;
begin
    foreach v_table in array array[
        'trading_accounts', 'trades', 'deals', 'cash_flows', 'account_snapshots', 'sync_logs',
        'sync_quarantine', 'sync_commit_chunks'
    ] loop
        execute format('alter table public.%I enable row level security', v_table);
        execute format(
            'create policy %I on public.%I for all to service_role using (true) with check (true)',
            v_table || '_service_role_all', v_table);
    end loop;

    -- The project's migration runner keeps its history in public (plain PostgreSQL); on a
    -- Supabase project that table would otherwise be readable through the Data API.
    if to_regclass('public.schema_migrations') is not null then
        alter table public.schema_migrations enable row level security;
        revoke all on table public.schema_migrations from anon, authenticated;
    end if;

    -- Child tables: the row's account must be one of the caller's. The uncorrelated IN list
    -- (and `(select auth.uid())`) is evaluated once per statement, not once per row.
    foreach v_table in array array[
        'trades', 'deals', 'cash_flows', 'account_snapshots', 'sync_logs', 'sync_quarantine'
    ] loop
        execute format(
            'create policy %I on public.%I for select to authenticated using ('
            'account_id in (select a.id from public.trading_accounts a'
            ' where a.user_id = (select auth.uid())))',
            v_table || '_select_own', v_table);
    end loop;
end
$rls$;

create policy trading_accounts_select_own on public.trading_accounts
    for select to authenticated
    using ((select auth.uid()) = user_id);
