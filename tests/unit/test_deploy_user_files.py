from pathlib import Path

from gpujobs.hub.integration import deploy_user_files


def sources(tmp_path: Path, version: str) -> tuple[Path, Path]:
    notebook = tmp_path / "src" / "tour.ipynb"
    examples = tmp_path / "src" / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    notebook.write_text(f"tour {version}")
    (examples / "a.py").write_text(f"print('a {version}')")
    return notebook, examples


def test_new_files_are_deployed_then_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    notebook, examples = sources(tmp_path, "v1")
    written = deploy_user_files(home, notebook=notebook, examples=examples)
    assert sorted(p.name for p in written) == ["a.py", "tour.ipynb"]
    assert deploy_user_files(home, notebook=notebook, examples=examples) == []


def test_a_newer_version_updates_untouched_copies_but_never_edited_ones(tmp_path: Path) -> None:
    home = tmp_path / "home"
    deploy_user_files(home, notebook=(s := sources(tmp_path, "v1"))[0], examples=s[1])
    (home / "tour.ipynb").write_text("my own notes")
    notebook, examples = sources(tmp_path, "v2")
    written = deploy_user_files(home, notebook=notebook, examples=examples)
    assert [p.name for p in written] == ["a.py"]
    assert (home / "gpujobs-examples" / "a.py").read_text() == "print('a v2')"
    assert (home / "tour.ipynb").read_text() == "my own notes"


def test_a_file_the_user_made_first_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "tour.ipynb").write_text("theirs")
    notebook, examples = sources(tmp_path, "v1")
    deploy_user_files(home, notebook=notebook, examples=examples)
    assert (home / "tour.ipynb").read_text() == "theirs"
