"""Data workers start clean: a lock some thread of the stage holds when they start is not held in them (a forked
worker would wait on it forever; CI saw prepare hang that way)."""

from __future__ import annotations

import ast
import threading

from fixtures.lineage import REPO

from chexops.data.processes import clean_context

# a library's module-level lock, as tqdm, MLflow or an allocator has; unlike logging's, nothing resets it at fork
LIBRARY_LOCK = threading.Lock()


def _takes_the_library_lock() -> bool:
    took = LIBRARY_LOCK.acquire(timeout=3)
    if took:
        LIBRARY_LOCK.release()
    return took


def test_a_worker_does_not_inherit_a_lock_another_thread_holds() -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with LIBRARY_LOCK:  # a thread in the middle of its work when the pool starts
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait()
    try:
        with clean_context([]).Pool(1) as pool:
            assert pool.apply(_takes_the_library_lock)
    finally:
        release.set()
        holder.join()


def test_every_pipeline_script_does_its_work_only_when_run_as_a_script() -> None:
    # a worker imports the main script again (as __mp_main__); a stage at top level would run once per worker
    for script in sorted((REPO / "pipelines").glob("*.py")):
        body = ast.parse(script.read_text()).body
        at_import = [node.lineno for node in body if not isinstance(node, INERT) and not _is_main_guard(node)
                     and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        assert not at_import, f"{script.name} runs lines {at_import} on import; put them under the main guard"


INERT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
