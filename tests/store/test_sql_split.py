"""The Supabase CLI's statement splitter, ported (mt5_sync/store/sql_split.py).

The cases follow the CLI's documented rules (supabase/cli pkg/parser): a ``;`` ends a statement
except inside quotes, dollar quotes, comments, parentheses and BEGIN ATOMIC bodies; comments
stay with the statement after them; trailing ``;`` and white space are trimmed. That each
statement of every migration runs on its own and rebuilds the same schema is checked in
test_migration_history.py (``cli_push``).
"""

from __future__ import annotations

import pytest

from mt5_sync.store.sql_split import split, split_and_trim


@pytest.mark.parametrize("parts", [
    ["select 1;", " select 2;", "\n"],
    ["select ';' || 'it''s;';", " end"],
    ['create policy "cats;dogs" on pets;', " end"],
    ["select $tag$ ; $$ ; $tag$;", " select $$;$$;"],
    ["select 1 -- no split here;\n + 1;", "\n-- trailing comment"],
    ["select /* ; /* nested ; */ ; */ 1;", " end"],
    ["select (1; 2);", " end"],
    ["\\;;", "\\;"],
    ["create function f() returns int language sql\nbegin atomic\n select 1; select 2;\nend;",
     "\nselect 1;"],
    ["create function fn_atomic() returns void language plpgsql as $$ begin null; end; $$;",
     " select 1;"],
    ["select $1;", " select 2"],
])
def test_splits_where_the_cli_splits(parts: list[str]) -> None:
    assert split("".join(parts)) == parts


def test_trim_drops_separators_and_space_but_keeps_comments() -> None:
    sql = "-- header\ncreate table t (id int);\n\n;;\n  select 1 ;\n-- the end\n"
    assert split_and_trim(sql) == ["-- header\ncreate table t (id int)", "select 1", "-- the end"]


def test_multibyte_text_is_kept_whole() -> None:
    sql = "comment on table t is 'Kontostand in €; Zeit';\nselect 'ü';"
    assert split_and_trim(sql) == ["comment on table t is 'Kontostand in €; Zeit'", "select 'ü'"]

