-- Realtime: publish the synced tables to Supabase Realtime (postgres_changes).
--
-- An app built on Supabase shows balances, trades and sync outcomes live by subscribing to
-- postgres_changes, which Supabase Realtime serves for the tables of the `supabase_realtime`
-- publication. Every Supabase project has that publication (created empty). Plain PostgreSQL
-- has none: then this file does nothing, and creates nothing (logical replication there is the
-- operator's choice).
--
-- Published: trading_accounts, trades, deals, cash_flows, account_snapshots, sync_logs.
-- Not published: sync_quarantine (invalid raw records), sync_commit_chunks (staging).
--
-- trading_accounts is published with a column list (PostgreSQL 15+) that leaves out
-- investor_password_encrypted, so a consumer of the publication's pgoutput stream (a replica,
-- an ETL pipeline) never receives the credential. Realtime's postgres_changes does not depend
-- on the list: it decodes the slot with wal2json and takes only the publication's table names
-- from it (realtime.list_changes); realtime.apply_rls then drops, per subscriber, every column
-- the subscriber's role may not SELECT and every row its RLS policies hide. So an app user
-- receives their own accounts' rows without the credential and the lease columns, which
-- `authenticated` is not granted (20261122000400_row_level_security.sql). A column added to
-- trading_accounts later is not published until a migration adds it to this list, as with the
-- grants (tests/store/test_realtime.py fails until then).
--
-- Kind to a publication the project owner already shaped: FOR ALL TABLES (already has every
-- table, credential included: left as it is, with a notice), tables already in it (kept), a
-- trading_accounts published without a column list (re-added with one), a schema-level
-- membership (cannot carry a column list: left as it is, with a notice).

do $realtime$
declare
    v_pub oid;
    v_all boolean;
    v_table text;
begin
    select p.oid, p.puballtables into v_pub, v_all
    from pg_publication p where p.pubname = 'supabase_realtime';
    if v_pub is null then
        return;
    end if;
    if v_all then
        raise notice 'supabase_realtime is FOR ALL TABLES: it already publishes every table';
        return;
    end if;

    foreach v_table in array array[
        'trades', 'deals', 'cash_flows', 'account_snapshots', 'sync_logs'
    ] loop
        if not exists (
            select 1 from pg_publication_tables t
            where t.pubname = 'supabase_realtime' and t.schemaname = 'public'
              and t.tablename = v_table
        ) then
            execute format('alter publication supabase_realtime add table public.%I', v_table);
        end if;
    end loop;

    if current_setting('server_version_num')::integer < 150000 then
        -- No column lists before 15: better unpublished than with the credential.
        raise notice 'trading_accounts not added to supabase_realtime: needs PostgreSQL 15+';
        return;
    end if;
    if exists (
        select 1 from pg_publication_tables t
        where t.pubname = 'supabase_realtime' and t.schemaname = 'public'
          and t.tablename = 'trading_accounts'
    ) then
        if not exists (
            select 1 from pg_publication_rel r
            where r.prpubid = v_pub and r.prrelid = 'public.trading_accounts'::regclass
        ) then
            raise notice 'supabase_realtime publishes schema public whole: left as it is';
            return;
        end if;
        alter publication supabase_realtime drop table public.trading_accounts;
    end if;
    alter publication supabase_realtime add table public.trading_accounts (
        id, user_id, login_number, broker_name, broker_server, server_time_rule, is_active,
        currency, leverage, margin_mode, balance, equity, margin, free_margin, margin_level,
        last_sync_at, last_successful_sync_at, sync_failure_count, last_connection_error,
        history_cursor, sync_lease_holder, sync_lease_until, last_manual_sync_at, created_at,
        updated_at
    );
end
$realtime$;
