"""`Any` only where a library forces it (issue 15, decision 40): a ratchet.

Each module's uses of `Any` (the names `Any` and attributes `typing.Any`, found
in its syntax tree: comments, strings and the import itself do not count) are
compared with its allowance below. More than allowed: type it, or raise the
allowance naming the library that forces it. Fewer than allowed: lower the
allowance, so it only ever goes down. A module not in the table is allowed none.

`python tests/unit/test_any_allowance.py` prints every module's count and the
total per folder.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("domain", "projections", "adapters", "api", "scheduler")

# module (path from the tree's root) -> (allowed uses of Any, the library that forces them)
ALLOWANCE: dict[str, tuple[int, str]] = {
    "adapters/agent_local.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/bootstrap.py": (7, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/config.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/config_cpis.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/config_schema.py": (6, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/config_values.py": (11, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/cpi/local.py": (8, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/cpi/local_copy.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/cpi/local_files.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/cpi/local_index.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/dispatch.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/follower.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/group_commit.py": (8, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/job_update_worker.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/locks.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/log_worker.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/logging.py": (6, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/metrics.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/pg_recorder.py": (5, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/rate_limit.py": (11, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/restore_worker.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/snapshot_worker.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/store.py": (9, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "adapters/task_progress_worker.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/api_processes.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/auth.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_args.py": (5, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_audit.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_deployments.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_event_texts.py": (5, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_job_updates.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_output.py": (5, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_progress.py": (8, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_replay.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_retention.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_server.py": (10, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_settings.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_snapshots.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/cli_tasks.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/client.py": (12, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/director.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/director_serving.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/errors.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/executor.py": (4, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/openapi.py": (11, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/requests.py": (8, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_audit.py": (5, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_deployments.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_job_updates.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_ops.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_restores.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_retention.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_settings.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routes_tasks.py": (5, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/routing.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/schemas.py": (20, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/startup.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "api/task_numbers.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "domain/job_update.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "domain/services/base.py": (6, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "domain/services/task_progress.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "domain/shared_reads.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/audit.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/database.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/deployments.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/events.py": (8, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/in_flight.py": (9, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/job_updates.py": (10, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/projector.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/queries.py": (2, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/replay.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/restores.py": (7, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/schedule_fires.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/snapshots.py": (13, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/tasks.py": (6, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "projections/view.py": (3, "not typed yet (issue 15 backlog): lower it as the module is typed"),
    "scheduler/process.py": (1, "not typed yet (issue 15 backlog): lower it as the module is typed"),
}


def count_any(source: str) -> int:
    """Uses of `Any` in the code of `source`: names and `typing.Any`-style attributes."""
    return sum(1 for node in ast.walk(ast.parse(source))
               if (isinstance(node, ast.Name) and node.id == "Any")
               or (isinstance(node, ast.Attribute) and node.attr == "Any"))


def counts(root: Path = ROOT) -> dict[str, int]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            n = count_any(path.read_text())
            if n:
                found[path.relative_to(root).as_posix()] = n
    return found


def over_and_under(found: dict[str, int]) -> tuple[list[str], list[str]]:
    over, under = [], []
    for module in sorted(set(found) | set(ALLOWANCE)):
        count, allowed = found.get(module, 0), ALLOWANCE.get(module, (0, ""))[0]
        if count > allowed:
            over.append(f"{module}: {count} uses of Any, allowance {allowed}: "
                        "type it or raise the allowance with the library that forces it")
        elif count < allowed:
            under.append(f"{module}: {count} uses of Any, allowance {allowed}: lower its allowance to {count}")
    return over, under


def test_the_count_sees_code_not_comments_strings_or_imports() -> None:
    source = ('from typing import Any\nimport typing\n# Any in a comment\n'
              'def f(x: Any, *a: typing.Any) -> "Any":\n    """Any."""\n    return dict[str, Any]()\n')
    assert count_any(source) == 3


def test_no_module_uses_any_beyond_its_allowance() -> None:
    over, _ = over_and_under(counts())
    assert not over, "\n".join(over)


def test_no_allowance_is_larger_than_its_use() -> None:
    _, under = over_and_under(counts())
    assert not under, "the allowance only goes down:\n" + "\n".join(under)


def test_every_allowance_names_its_reason() -> None:
    assert [m for m, (_, reason) in ALLOWANCE.items() if not reason.strip()] == []


if __name__ == "__main__":
    found = counts()
    for module, n in sorted(found.items(), key=lambda item: (-item[1], item[0])):
        print(f"{n:4d}  {module}")
    per_folder = {folder: sum(n for m, n in found.items() if m.startswith(folder + "/")) for folder in FOLDERS}
    print("  ".join(f"{folder} {n}" for folder, n in per_folder.items()), f"total {sum(found.values())}")
    sys.exit(0)
