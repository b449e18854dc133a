"""The README's first example, saved as a file, is what ``outlast worker`` serves, as is (#15)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outlast.control import Dispatcher

from .conftest import SpawnWorker

pytestmark = pytest.mark.cluster

README = Path(__file__).parents[2] / "README.md"


async def test_the_readme_example_saved_as_a_file_is_served_by_a_worker(
    spawn_worker: SpawnWorker, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    example = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    assert "asyncio.run(main())" in example  # the example runs itself when executed …
    flows = tmp_path / "flows.py"
    flows.write_text(example)
    await spawn_worker(app=str(flows))  # … and importing it (what a worker does) runs nothing
    started = await dispatcher.start("blog", {"topic": "durable AI"})
    result = await dispatcher.result(started.run_id, timeout=30)
    assert result == (
        "Why durable AI fails: written once, replayed from its checkpoint. \n"
        "How durable AI resumes: written once, replayed from its checkpoint. "
    )
