-- Ledger reconciliation: every commit proves the stored deals reproduce the balance (issue 13).
--
-- MT5's balance equals the sum of profit + swap + commission + fee over every deal except
-- DEAL_TYPE_CREDIT (3), which moves `credit` instead (shared/DESIGN.md, "Real terminals are
-- messier"). Per account we keep the *opening offset* = balance - sum(stored balance-moving
-- deals): 0 when the stored deals reach back to the account's first deal, otherwise the balance
-- before the first synced window; either way constant while the stored ledger is complete. A
-- commit whose offset drifts from the kept one by more than 0.01 has a ledger gap (history read
-- partially, a closing deal not visible yet, a deal cancelled after the fact, ...): it writes
-- what it read, turns partial with error_code 'ledger_gap' and both figures in the message, and
-- leaves the cursor where it was; the client re-reads the whole history next time
-- (mt5_sync.sync.window) until the offset closes, and the heal is recorded.
-- Open positions do not move the balance: equity = balance + credit + sum(open profit + swap)
-- is checked too ('equity_drift', partial; the cursor still moves: equity is not history).
--
-- A trade whose every deal the broker cancelled is removed (its deals stay in the ledger).
--
-- Redefines mt5_commit_account_sync (from 20261122000800_fast_commit.sql, otherwise unchanged)
-- and mt5_commit_staged_account_sync (20261122000400, its replay answer now carries the
-- ledger); adds the ledger columns of trading_accounts and the view mt5_ledger_reconciliation.

alter table public.trading_accounts
    add column ledger_offset numeric(28, 8),
    add column ledger_status text,
    add column ledger_checked_at timestamptz,
    add column ledger_drift numeric(28, 8),
    add column ledger_equity_drift numeric(28, 8),
    add column ledger_gap_since timestamptz,
    add column ledger_healed_at timestamptz,
    add column ledger_heal_note text,
    add constraint trading_accounts_ledger_status_check
        check (ledger_status in ('baseline', 'ok', 'gap', 'equity_drift'));

comment on column public.trading_accounts.ledger_offset is
    'balance - sum(profit+swap+commission+fee) over the stored deals except credit: 0 when they reach the first deal; constant while the ledger is complete.';
comment on column public.trading_accounts.ledger_status is
    'Last reconciliation: baseline (first check, offset recorded), ok, gap (deals missing or changed: the next sync re-reads all history), equity_drift.';

-- Supabase Realtime publishes trading_accounts with a column list (20261130000100_realtime.sql):
-- the new columns join it, the credential stays out. Nothing to do without that publication,
-- or where the owner shaped it otherwise (FOR ALL TABLES, schema-level, no column list).
do $realtime$
begin
    if current_setting('server_version_num')::integer < 150000 then
        return;
    end if;
    if exists (
        select 1 from pg_publication p join pg_publication_rel r on r.prpubid = p.oid
         where p.pubname = 'supabase_realtime'
           and r.prrelid = 'public.trading_accounts'::regclass and r.prattrs is not null
    ) then
        alter publication supabase_realtime drop table public.trading_accounts;
        alter publication supabase_realtime add table public.trading_accounts (
            id, user_id, login_number, broker_name, broker_server, server_time_rule, is_active,
            currency, leverage, margin_mode, balance, equity, margin, free_margin, margin_level,
            last_sync_at, last_successful_sync_at, sync_failure_count, last_connection_error,
            history_cursor, sync_lease_holder, sync_lease_until, sync_lease_flow_run_id,
            last_manual_sync_at,
            created_at, updated_at, ledger_offset, ledger_status, ledger_checked_at,
            ledger_drift, ledger_equity_drift, ledger_gap_since, ledger_healed_at,
            ledger_heal_note
        );
    end if;
end
$realtime$;

-- The app may read the reconciliation of its own accounts (column grants: see 20261122000400).
grant select (ledger_offset, ledger_status, ledger_checked_at, ledger_drift, ledger_equity_drift,
              ledger_gap_since, ledger_healed_at, ledger_heal_note)
    on table public.trading_accounts to authenticated;

create or replace function public.mt5_commit_account_sync(p jsonb) returns jsonb
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
declare
    fn constant text := 'mt5_commit_account_sync';
    c_trade_cols constant text[] := array[
        'ticket', 'symbol', 'side', 'status', 'volume', 'open_price', 'open_time_utc',
        'open_time_server', 'close_price', 'close_time_utc', 'close_time_server', 'stop_loss',
        'take_profit', 'current_price', 'profit', 'swap', 'commission', 'fee', 'net_profit',
        'magic', 'comment', 'deal_count'];
    v_stage text := 'payload';
    v_sync_id uuid;
    v_account_id uuid;
    v_execution_id uuid;
    v_flow_run_id uuid;
    v_trigger text;
    v_sync_type text;
    v_status text;
    v_error_message text;
    v_error_code text;
    v_started timestamptz;
    v_completed timestamptz;
    v_duration_ms integer;
    v_cursor timestamptz;
    v_lease_holder uuid;
    v_account jsonb;
    v_snapshot jsonb;
    v_n_deals integer;
    v_n_cash integer;
    v_n_closed integer;
    v_n_open integer;
    v_n_open_rows integer;
    v_n_quarantine integer;
    v_open_positions jsonb;
    v_deals jsonb;
    v_cash jsonb;
    v_closed jsonb;
    v_old public.trading_accounts%rowtype;
    v_new public.trading_accounts%rowtype;
    v_login bigint;
    -- ledger reconciliation
    v_ledger jsonb;
    v_expected numeric;
    v_baseline numeric;
    v_balance numeric;
    v_deal_sum numeric;
    v_offset numeric;
    v_drift numeric;
    v_floating numeric;
    v_equity_drift numeric;
    v_ledger_status text;
    v_ledger_message text;
    -- error re-raise
    e_state text;
    e_message text;
    e_detail text;
    e_hint text;
    e_constraint text;
    e_table text;
    e_column text;
begin
    -- ------------------------------------------------ validate the payload header
    v_sync_id := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id := public.mt5_payload_uuid(p, fn, 'account_id');
    v_execution_id := public.mt5_payload_uuid(p, fn, 'execution_id', false);
    v_flow_run_id := public.mt5_payload_uuid(p, fn, 'flow_run_id', false);
    v_trigger := public.mt5_payload_choice(p, fn, 'trigger', array['scheduled', 'manual', 'backfill']);
    v_sync_type := public.mt5_payload_choice(p, fn, 'sync_type', array['full', 'incremental']);
    v_status := public.mt5_payload_choice(p, fn, 'status', array['success', 'partial']);
    v_error_message := public.mt5_payload_text(p, fn, 'error_message', false);
    v_error_code := public.mt5_payload_text(p, fn, 'error_code', false);
    v_started := public.mt5_payload_timestamptz(p, fn, 'started_at');
    v_completed := public.mt5_payload_timestamptz(p, fn, 'completed_at');
    v_cursor := public.mt5_payload_timestamptz(p, fn, 'history_cursor', false);
    v_lease_holder := public.mt5_payload_uuid(p, fn, 'lease_holder', false);
    v_account := public.mt5_payload_object(p, fn, 'account');
    v_snapshot := public.mt5_payload_object(p, fn, 'snapshot');
    v_ledger := public.mt5_payload_object(p, fn, 'ledger');
    begin
        v_expected := (v_ledger ->> 'expected_offset')::numeric;
    exception when invalid_text_representation then
        raise exception '%: payload field "ledger.expected_offset" must be a number or null', fn
            using errcode = 'invalid_parameter_value';
    end;
    -- Row lists as columns (either wire form, see the top of this file).
    v_deals := public.mt5_payload_columns(p, fn, 'deals', array[
        'ticket', 'order_ticket', 'position_id', 'time_utc', 'time_server', 'time_msc_server',
        'type', 'entry', 'magic', 'reason', 'volume', 'price', 'commission', 'swap', 'profit',
        'fee', 'symbol', 'comment', 'external_id']);
    v_cash := public.mt5_payload_columns(p, fn, 'cash_flows', array[
        'deal_ticket', 'type', 'kind', 'amount', 'time_utc', 'time_server', 'comment']);
    v_closed := public.mt5_payload_columns(p, fn, 'closed_trades', c_trade_cols);
    v_open_positions := public.mt5_payload_columns(p, fn, 'open_positions', c_trade_cols, true);
    v_n_deals := (v_deals ->> 'rows')::integer;
    v_n_cash := (v_cash ->> 'rows')::integer;
    v_n_closed := (v_closed ->> 'rows')::integer;
    -- JSON null (not fetched) and an empty list both write no open positions.
    v_n_open := (v_open_positions ->> 'rows')::integer;
    v_n_open_rows := coalesce(v_n_open, 0);
    v_deals := v_deals -> 'columns';
    v_cash := v_cash -> 'columns';
    v_closed := v_closed -> 'columns';
    v_open_positions := coalesce(v_open_positions -> 'columns', '{}'::jsonb);
    v_n_quarantine := public.mt5_payload_array_length(p, fn, 'quarantine');
    begin
        v_duration_ms := public.mt5_payload_text(p, fn, 'duration_ms', false)::integer;
    exception when invalid_text_representation or numeric_value_out_of_range then
        raise exception '%: payload field "duration_ms" must be an integer', fn
            using errcode = 'invalid_parameter_value';
    end;
    if (v_n_closed > 0 and v_closed -> 'status' is null)
       or exists (select 1 from unnest(mt5_col_text(v_closed, 'status', v_n_closed)) s
                   where s is distinct from 'closed') then
        raise exception '%: every row of "closed_trades" must have status "closed"', fn
            using errcode = 'invalid_parameter_value';
    end if;
    if (v_n_open_rows > 0 and v_open_positions -> 'status' is null)
       or exists (select 1
                    from unnest(mt5_col_text(v_open_positions, 'status', v_n_open_rows)) s
                   where s is distinct from 'open') then
        raise exception '%: every row of "open_positions" must have status "open"', fn
            using errcode = 'invalid_parameter_value';
    end if;

    -- Lock the account first: commits and failure records of one account serialize here (the
    -- lease already keeps them apart; this is the backstop), and an unknown id fails clearly.
    select * into v_old from public.trading_accounts where id = v_account_id for update;
    if not found then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;
    if v_account is not null then
        begin
            v_login := (v_account ->> 'login')::bigint;
        exception when invalid_text_representation or numeric_value_out_of_range then
            raise exception '%: payload field "account.login" must be an integer', fn
                using errcode = 'invalid_parameter_value';
        end;
        -- A cross-wired terminal slot must never write one account's data into another's row.
        if v_login is distinct from v_old.login_number then
            raise exception '%: account.login % does not match account % (login %)',
                fn, v_login, v_account_id, v_old.login_number
                using errcode = 'invalid_parameter_value';
        end if;
    end if;

    -- ------------------------------------------------ (b) deals
    v_stage := 'deals';
    insert into public.deals as d
        (account_id, ticket, order_ticket, position_id, time, time_server, time_msc_server,
         type, entry, magic, reason, volume, price, commission, swap, profit, fee,
         symbol, comment, external_id, created_at, updated_at)
    select distinct on (x.ticket)
           v_account_id, x.ticket, x.order_ticket, x.position_id, x.time_utc, x.time_server,
           x.time_msc_server, x.type, x.entry, x.magic, x.reason, x.volume, x.price,
           x.commission, x.swap, x.profit, x.fee, x.symbol, x.comment, x.external_id,
           v_completed, v_completed
      from unnest(
           mt5_col_bigint(v_deals, 'ticket', v_n_deals),
           mt5_col_bigint(v_deals, 'order_ticket', v_n_deals),
           mt5_col_bigint(v_deals, 'position_id', v_n_deals),
           mt5_col_timestamptz(v_deals, 'time_utc', v_n_deals),
           mt5_col_bigint(v_deals, 'time_server', v_n_deals),
           mt5_col_bigint(v_deals, 'time_msc_server', v_n_deals),
           mt5_col_int(v_deals, 'type', v_n_deals),
           mt5_col_int(v_deals, 'entry', v_n_deals),
           mt5_col_bigint(v_deals, 'magic', v_n_deals),
           mt5_col_int(v_deals, 'reason', v_n_deals),
           mt5_col_numeric(v_deals, 'volume', v_n_deals),
           mt5_col_numeric(v_deals, 'price', v_n_deals),
           mt5_col_numeric(v_deals, 'commission', v_n_deals),
           mt5_col_numeric(v_deals, 'swap', v_n_deals),
           mt5_col_numeric(v_deals, 'profit', v_n_deals),
           mt5_col_numeric(v_deals, 'fee', v_n_deals),
           mt5_col_text(v_deals, 'symbol', v_n_deals),
           mt5_col_text(v_deals, 'comment', v_n_deals),
           mt5_col_text(v_deals, 'external_id', v_n_deals))
           with ordinality as x(
           ticket, order_ticket, position_id, time_utc, time_server, time_msc_server, type,
           entry, magic, reason, volume, price, commission, swap, profit, fee, symbol, comment,
           external_id, ord)
     order by x.ticket, x.ord desc   -- a ticket sent twice: the last occurrence wins
    on conflict (account_id, ticket) do update
       set order_ticket = excluded.order_ticket,
           position_id = excluded.position_id,
           time = excluded.time,
           time_server = excluded.time_server,
           time_msc_server = excluded.time_msc_server,
           type = excluded.type,
           entry = excluded.entry,
           magic = excluded.magic,
           reason = excluded.reason,
           volume = excluded.volume,
           price = excluded.price,
           commission = excluded.commission,
           swap = excluded.swap,
           profit = excluded.profit,
           fee = excluded.fee,
           symbol = excluded.symbol,
           comment = excluded.comment,
           external_id = excluded.external_id,
           updated_at = excluded.updated_at
     where (d.order_ticket, d.position_id, d.time, d.time_server, d.time_msc_server, d.type,
            d.entry, d.magic, d.reason, d.volume, d.price, d.commission, d.swap, d.profit,
            d.fee, d.symbol, d.comment, d.external_id)
           is distinct from
           (excluded.order_ticket, excluded.position_id, excluded.time, excluded.time_server,
            excluded.time_msc_server, excluded.type, excluded.entry, excluded.magic,
            excluded.reason, excluded.volume, excluded.price, excluded.commission,
            excluded.swap, excluded.profit, excluded.fee, excluded.symbol, excluded.comment,
            excluded.external_id);

    -- ------------------------------------------------ (c) cash flows
    v_stage := 'cash_flows';
    insert into public.cash_flows as c
        (account_id, deal_ticket, type, kind, amount, time, time_server, comment,
         created_at, updated_at)
    select distinct on (x.deal_ticket)
           v_account_id, x.deal_ticket, x.type, x.kind, x.amount, x.time_utc, x.time_server,
           x.comment, v_completed, v_completed
      from unnest(
           mt5_col_bigint(v_cash, 'deal_ticket', v_n_cash),
           mt5_col_int(v_cash, 'type', v_n_cash),
           mt5_col_text(v_cash, 'kind', v_n_cash),
           mt5_col_numeric(v_cash, 'amount', v_n_cash),
           mt5_col_timestamptz(v_cash, 'time_utc', v_n_cash),
           mt5_col_bigint(v_cash, 'time_server', v_n_cash),
           mt5_col_text(v_cash, 'comment', v_n_cash))
           with ordinality as x(deal_ticket, type, kind, amount, time_utc, time_server, comment,
                                ord)
     order by x.deal_ticket, x.ord desc
    on conflict (account_id, deal_ticket) do update
       set type = excluded.type,
           kind = excluded.kind,
           amount = excluded.amount,
           time = excluded.time,
           time_server = excluded.time_server,
           comment = excluded.comment,
           updated_at = excluded.updated_at
     where (c.type, c.kind, c.amount, c.time, c.time_server, c.comment)
           is distinct from
           (excluded.type, excluded.kind, excluded.amount, excluded.time, excluded.time_server,
            excluded.comment);

    -- ------------------------------------------------ (d) trades
    v_stage := 'trades';
    insert into public.trades as t
        (account_id, ticket, symbol, side, status, volume, open_price, open_time,
         open_time_server, close_price, close_time, close_time_server, stop_loss, take_profit,
         current_price, profit, swap, commission, fee, net_profit, magic, comment, deal_count,
         created_at, updated_at)
    select distinct on (x.ticket)
           v_account_id, x.ticket, x.symbol, x.side, x.status, x.volume, x.open_price,
           x.open_time_utc, x.open_time_server, x.close_price, x.close_time_utc,
           x.close_time_server, x.stop_loss, x.take_profit, x.current_price, x.profit, x.swap,
           x.commission, x.fee, x.net_profit, x.magic, x.comment, x.deal_count,
           v_completed, v_completed
      from (
            select u.*, 1 as closed_first
              from mt5_trade_columns(v_closed, v_n_closed) as u
            union all
            select u.*, 0
              from mt5_trade_columns(v_open_positions, v_n_open_rows) as u
           ) as x
     order by x.ticket, x.closed_first desc, x.ord desc
    on conflict (account_id, ticket) do update
       set symbol = excluded.symbol,
           side = excluded.side,
           status = excluded.status,
           volume = excluded.volume,
           open_price = excluded.open_price,
           open_time = excluded.open_time,
           open_time_server = excluded.open_time_server,
           close_price = excluded.close_price,
           close_time = excluded.close_time,
           close_time_server = excluded.close_time_server,
           stop_loss = excluded.stop_loss,
           take_profit = excluded.take_profit,
           current_price = excluded.current_price,
           profit = excluded.profit,
           swap = excluded.swap,
           commission = excluded.commission,
           fee = excluded.fee,
           net_profit = excluded.net_profit,
           magic = excluded.magic,
           comment = excluded.comment,
           deal_count = excluded.deal_count,
           updated_at = excluded.updated_at
     where not (t.status = 'closed' and excluded.status = 'open')
       and (t.symbol, t.side, t.status, t.volume, t.open_price, t.open_time, t.open_time_server,
            t.close_price, t.close_time, t.close_time_server, t.stop_loss, t.take_profit,
            t.current_price, t.profit, t.swap, t.commission, t.fee, t.net_profit, t.magic,
            t.comment, t.deal_count)
           is distinct from
           (excluded.symbol, excluded.side, excluded.status, excluded.volume,
            excluded.open_price, excluded.open_time, excluded.open_time_server,
            excluded.close_price, excluded.close_time, excluded.close_time_server,
            excluded.stop_loss, excluded.take_profit, excluded.current_price, excluded.profit,
            excluded.swap, excluded.commission, excluded.fee, excluded.net_profit,
            excluded.magic, excluded.comment, excluded.deal_count);

    -- A position whose every stored trade deal the broker cancelled (BUY/SELL -> *_CANCELED,
    -- DESIGN.md) is no longer a trade: its row goes (its deals stay in the ledger).
    v_stage := 'cancelled trades';
    delete from public.trades t
     where t.account_id = v_account_id
       and t.ticket in (select x.position_id
                          from unnest(mt5_col_bigint(v_deals, 'position_id', v_n_deals),
                                      mt5_col_int(v_deals, 'type', v_n_deals))
                               as x(position_id, type)
                         where x.type in (13, 14))
       and not exists (select 1 from public.deals d
                        where d.account_id = v_account_id and d.position_id = t.ticket
                          and d.type in (0, 1));

    -- ------------------------------------------------ (e) snapshot
    if v_snapshot is not null then
        v_stage := 'snapshot';
        insert into public.account_snapshots as s
            (account_id, taken_at, balance, equity, margin, free_margin, margin_level, created_at)
        select v_account_id, x.taken_at, x.balance, x.equity, x.margin, x.free_margin,
               x.margin_level, v_completed
          from jsonb_to_record(v_snapshot) as x(
               taken_at timestamptz, balance numeric(28, 8), equity numeric(28, 8),
               margin numeric(28, 8), free_margin numeric(28, 8), margin_level numeric(28, 8))
        on conflict (account_id, taken_at) do update
           set balance = excluded.balance,
               equity = excluded.equity,
               margin = excluded.margin,
               free_margin = excluded.free_margin,
               margin_level = excluded.margin_level
         where (s.balance, s.equity, s.margin, s.free_margin, s.margin_level)
               is distinct from
               (excluded.balance, excluded.equity, excluded.margin, excluded.free_margin,
                excluded.margin_level);
    end if;

    -- ------------------------------------------------ (f) quarantine
    v_stage := 'quarantine';
    insert into public.sync_quarantine
        (sync_id, kind, ordinal, account_id, ticket, reasons, record, created_at)
    select v_sync_id, coalesce(e.j ->> 'kind', 'unknown'), e.ord::integer, v_account_id,
           (e.j ->> 'ticket')::bigint, coalesce(e.j ->> 'reasons', ''),
           coalesce(e.j -> 'record', 'null'::jsonb), v_completed
      from jsonb_array_elements(p -> 'quarantine') with ordinality as e(j, ord)
    on conflict (sync_id, kind, ordinal) do nothing;

    -- ------------------------------------------------ (k) ledger reconciliation
    -- MT5's balance is the sum of every balance-moving deal (all but DEAL_TYPE_CREDIT = 3).
    -- offset = balance - sum over the STORED deals: 0 when they reach back to the account's
    -- first deal, the balance before the first synced window otherwise -- constant either way
    -- while the ledger is complete. The client sends "ledger" only when it read the history
    -- without error, and "ledger.expected_offset" = 0 when the terminal reported no deal
    -- before the window (the window holds the whole history). A different offset is a gap:
    -- deals missing or changed after the fact. The sync is then partial and the cursor stays.
    if v_account is not null and v_ledger is not null then
        v_stage := 'ledger';
        select coalesce(sum(d.profit + d.swap + d.commission + d.fee), 0)
          into v_deal_sum
          from public.deals d
         where d.account_id = v_account_id and d.type <> 3;
        v_balance := (v_account ->> 'balance')::numeric;
        v_offset := round(v_balance - v_deal_sum, 2);
        v_baseline := coalesce(v_expected, v_old.ledger_offset);
        v_drift := round(v_offset - coalesce(v_baseline, v_offset), 2);
        if v_n_open is not null then
            -- Open positions do not move the balance; their floating P/L and swap are equity.
            select coalesce(sum(x.profit + x.swap), 0)
              into v_floating
              from unnest(mt5_col_numeric(v_open_positions, 'profit', v_n_open_rows),
                          mt5_col_numeric(v_open_positions, 'swap', v_n_open_rows))
                   as x(profit, swap);
            v_equity_drift := round((v_account ->> 'equity')::numeric
                                    - (v_balance + coalesce((v_account ->> 'credit')::numeric, 0)
                                       + v_floating), 2);
        end if;
        if abs(v_drift) > 0.01 then
            v_ledger_status := 'gap';
            v_ledger_message := format(
                'ledger_gap: balance %s minus the stored deals (%s) gives opening offset %s, '
                'expected %s (drift %s %s); the cursor stays and the next sync re-reads history',
                v_balance, round(v_deal_sum, 2), v_offset, v_baseline, v_drift,
                coalesce(v_account ->> 'currency', ''));
            v_cursor := null;
        elsif abs(coalesce(v_equity_drift, 0)) > 0.01 then
            v_ledger_status := 'equity_drift';
            v_ledger_message := format(
                'equity_drift: equity %s differs from balance %s + credit %s + open P/L and swap '
                '%s by %s', v_account ->> 'equity', v_balance,
                coalesce(v_account ->> 'credit', '0'), v_floating, v_equity_drift);
        elsif v_baseline is null then
            v_ledger_status := 'baseline';  -- first check of a window that starts later
        else
            v_ledger_status := 'ok';
        end if;
        if v_ledger_message is not null then
            v_status := 'partial';
            v_error_code := coalesce(v_error_code, split_part(v_ledger_message, ':', 1));
            v_error_message := concat_ws('; ', v_ledger_message, v_error_message);
        end if;
    end if;

    -- ------------------------------------------------ (a, g, h, j) the account row
    v_stage := 'trading_accounts';
    v_new := v_old;
    if v_account is not null then
        select x.balance, x.equity, x.margin, x.free_margin, x.margin_level, x.currency,
               x.leverage, x.margin_mode, coalesce(v_old.broker_name, nullif(x.company, ''))
          into v_new.balance, v_new.equity, v_new.margin, v_new.free_margin, v_new.margin_level,
               v_new.currency, v_new.leverage, v_new.margin_mode, v_new.broker_name
          from jsonb_to_record(v_account) as x(
               balance numeric(28, 8), equity numeric(28, 8), margin numeric(28, 8),
               free_margin numeric(28, 8), margin_level numeric(28, 8), currency text,
               leverage integer, margin_mode text, company text);
    end if;
    if v_cursor is not null and (v_old.history_cursor is null or v_cursor > v_old.history_cursor) then
        v_new.history_cursor := v_cursor;
    end if;
    v_new.last_sync_at := greatest(v_old.last_sync_at, v_completed);
    if v_ledger_status is not null then
        v_new.ledger_offset := coalesce(v_baseline, v_offset);
        v_new.ledger_status := v_ledger_status;
        v_new.ledger_checked_at := v_completed;
        v_new.ledger_drift := v_drift;
        v_new.ledger_equity_drift := v_equity_drift;
        if v_ledger_status = 'gap' then
            v_new.ledger_gap_since := coalesce(v_old.ledger_gap_since, v_completed);
        elsif v_old.ledger_status = 'gap' then
            v_new.ledger_gap_since := null;
            v_new.ledger_healed_at := v_completed;
            v_new.ledger_heal_note := format(
                'gap since %s (drift %s) closed by %s sync %s', v_old.ledger_gap_since,
                v_old.ledger_drift, v_sync_type, v_sync_id);
        end if;
    end if;
    if v_status = 'success' then
        v_new.last_successful_sync_at := greatest(v_old.last_successful_sync_at, v_completed);
        v_new.sync_failure_count := 0;
        v_new.last_connection_error := null;
    else
        v_new.last_connection_error := v_error_message;
    end if;
    if v_new is distinct from v_old then
        v_new.updated_at := v_completed;
    end if;
    -- The lease is bookkeeping: releasing it does not count as a change of the account.
    if v_lease_holder is not null and v_old.sync_lease_holder = v_lease_holder then
        v_new.sync_lease_holder := null;
        v_new.sync_lease_until := null;
    end if;
    if v_new is distinct from v_old then
        update public.trading_accounts
           set balance = v_new.balance,
               equity = v_new.equity,
               margin = v_new.margin,
               free_margin = v_new.free_margin,
               margin_level = v_new.margin_level,
               currency = v_new.currency,
               leverage = v_new.leverage,
               margin_mode = v_new.margin_mode,
               broker_name = v_new.broker_name,
               history_cursor = v_new.history_cursor,
               last_sync_at = v_new.last_sync_at,
               last_successful_sync_at = v_new.last_successful_sync_at,
               sync_failure_count = v_new.sync_failure_count,
               last_connection_error = v_new.last_connection_error,
               sync_lease_holder = v_new.sync_lease_holder,
               sync_lease_until = v_new.sync_lease_until,
               ledger_offset = v_new.ledger_offset,
               ledger_status = v_new.ledger_status,
               ledger_checked_at = v_new.ledger_checked_at,
               ledger_drift = v_new.ledger_drift,
               ledger_equity_drift = v_new.ledger_equity_drift,
               ledger_gap_since = v_new.ledger_gap_since,
               ledger_healed_at = v_new.ledger_healed_at,
               ledger_heal_note = v_new.ledger_heal_note,
               updated_at = v_new.updated_at
         where id = v_account_id;
    end if;

    -- ------------------------------------------------ (i) the log row
    v_stage := 'sync_logs';
    insert into public.sync_logs as l
        (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status, started_at,
         completed_at, duration_ms, trades_synced, deals_synced, error_code, error_message,
         details, created_at)
    values
        (v_sync_id, v_account_id, v_execution_id, v_flow_run_id, v_trigger, v_sync_type,
         v_status, v_started, v_completed, v_duration_ms, v_n_closed + coalesce(v_n_open, 0),
         v_n_deals, v_error_code, v_error_message,
         jsonb_build_object(
             'closed_trades', v_n_closed,
             'open_positions', v_n_open,
             'deals', v_n_deals,
             'cash_flows', v_n_cash,
             'quarantined', v_n_quarantine,
             'account_updated', v_account is not null,
             'snapshot_taken_at', v_snapshot ->> 'taken_at',
             'history_cursor', v_cursor,
             'ledger', case when v_ledger_status is null then null else jsonb_build_object(
                 'status', v_ledger_status, 'balance', v_balance, 'deal_sum', v_deal_sum,
                 'offset', v_offset, 'expected', v_baseline, 'drift', v_drift,
                 'equity_drift', v_equity_drift) end),
         v_started)
    on conflict (sync_id) do update
       set account_id = excluded.account_id,
           execution_id = excluded.execution_id,
           flow_run_id = excluded.flow_run_id,
           trigger = excluded.trigger,
           sync_type = excluded.sync_type,
           status = excluded.status,
           started_at = excluded.started_at,
           completed_at = excluded.completed_at,
           duration_ms = excluded.duration_ms,
           trades_synced = excluded.trades_synced,
           deals_synced = excluded.deals_synced,
           error_code = excluded.error_code,
           error_message = excluded.error_message,
           details = excluded.details
     where (l.account_id, l.execution_id, l.flow_run_id, l.trigger, l.sync_type, l.status,
            l.started_at, l.completed_at, l.duration_ms, l.trades_synced, l.deals_synced,
            l.error_code, l.error_message, l.details)
           is distinct from
           (excluded.account_id, excluded.execution_id, excluded.flow_run_id, excluded.trigger,
            excluded.sync_type, excluded.status, excluded.started_at, excluded.completed_at,
            excluded.duration_ms, excluded.trades_synced, excluded.deals_synced,
            excluded.error_code, excluded.error_message, excluded.details);

    return jsonb_build_object(
        'sync_id', v_sync_id,
        'status', v_status,
        'trades_synced', v_n_closed + coalesce(v_n_open, 0),
        'deals_synced', v_n_deals,
        'cash_flows_synced', v_n_cash,
        'quarantined', v_n_quarantine,
        'cursor', v_new.history_cursor,
        'error_code', v_error_code,
        'error_message', v_error_message,
        'ledger', case when v_ledger_status is null then null else jsonb_build_object(
            'status', v_ledger_status, 'offset', v_offset, 'expected', v_baseline,
            'drift', v_drift, 'equity_drift', v_equity_drift) end);
exception
    when others then
        get stacked diagnostics
            e_state = returned_sqlstate,
            e_message = message_text,
            e_detail = pg_exception_detail,
            e_hint = pg_exception_hint,
            e_constraint = constraint_name,
            e_table = table_name,
            e_column = column_name;
        if v_stage = 'payload' then
            raise;  -- validation errors already name the field
        end if;
        -- Name the part of the payload that failed; keep SQLSTATE and constraint so clients can
        -- still tell a check violation from a lost connection.
        raise exception '%: writing % failed: %', fn, v_stage, e_message
            using errcode = e_state,
                  detail = coalesce(e_detail, ''),
                  hint = coalesce(e_hint, ''),
                  constraint = coalesce(e_constraint, ''),
                  table = coalesce(e_table, ''),
                  column = coalesce(e_column, '');
end
$$;

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
                       'cursor', a.history_cursor,
                       'error_code', l.error_code,
                       'error_message', l.error_message,
                       'ledger', l.details -> 'ledger')
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


revoke all on function public.mt5_commit_account_sync(jsonb) from public, anon, authenticated;
grant execute on function public.mt5_commit_account_sync(jsonb) to service_role;
revoke all on function public.mt5_commit_staged_account_sync(jsonb) from public, anon, authenticated;
grant execute on function public.mt5_commit_staged_account_sync(jsonb) to service_role;

-- Per account: the kept offset, the last check and what it found.
--   select * from mt5_ledger_reconciliation where status <> 'ok';
create view public.mt5_ledger_reconciliation
with (security_invoker = true) as
select a.id as account_id,
       a.user_id,
       a.login_number,
       a.broker_server,
       a.currency,
       a.balance,
       a.equity,
       a.ledger_offset as opening_offset,
       a.ledger_checked_at as last_checked_at,
       a.ledger_drift as drift,
       a.ledger_equity_drift as equity_drift,
       coalesce(a.ledger_status, 'unchecked') as status,
       a.ledger_gap_since as gap_since,
       a.ledger_healed_at as healed_at,
       a.ledger_heal_note as heal_note,
       a.history_cursor
  from public.trading_accounts a;

revoke all on table public.mt5_ledger_reconciliation from public, anon, authenticated, service_role;
grant select on table public.mt5_ledger_reconciliation to authenticated, service_role;
