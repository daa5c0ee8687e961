import json
from pathlib import Path

import pytest

from raftloop_judge.rubrics import RubricError, load_rubrics, rubrics_digest


def test_bundled_rubrics_cover_the_five_criteria_in_yaml_and_toml() -> None:
    names = [r.name for r in load_rubrics()]
    assert names == ["correctness", "groundedness", "helpfulness", "safety", "tone"]
    assert next(r for r in load_rubrics() if r.name == "groundedness").needs_context


def test_a_folder_of_json_rubrics_overrides_and_changes_the_digest(tmp_path: Path) -> None:
    rubric = {
        "name": "brevity",
        "description": "Short?",
        "anchors": {str(i): "x" for i in range(1, 6)},
    }
    (tmp_path / "brevity.json").write_text(json.dumps(rubric))
    [loaded] = load_rubrics(tmp_path)
    assert loaded.name == "brevity"
    assert rubrics_digest([loaded]) != rubrics_digest(load_rubrics())


def test_bad_rubrics_fail_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\ndescription: x\nanchors: {1: a}\n")
    with pytest.raises(RubricError, match=r"bad\.yaml"):
        load_rubrics(tmp_path)
    with pytest.raises(RubricError, match="no rubric files"):
        load_rubrics(tmp_path / "missing")
    with pytest.raises(RubricError, match="unknown criteria"):
        load_rubrics(only=["nope"])
