"""What a newcomer reads: the README's links stay inside the repository, and its Python
snippet runs as written (only the two values `pigeon app create` printed filled in) against a
real server with a device connected."""

import os
import re
import subprocess
import sys

from conftest import ROOT, Device

README = os.path.join(ROOT, "README.md")


def readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def test_readme_links_stay_in_the_repository():
    text = readme()
    assert "../shared" not in text, "the README points outside the repository"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert not target.startswith(("http://", "https://", "/")), target
        assert os.path.exists(os.path.join(ROOT, target)), f"README links to missing {target}"


def test_docs_a_user_needs_are_in_the_repository():
    for doc in ["docs/device-protocol.md", "docs/callbacks.md"]:
        path = os.path.join(ROOT, doc)
        assert os.path.getsize(path) > 2000, doc
        with open(path, encoding="utf-8") as f:
            assert "../shared" not in f.read(), doc


def test_readme_says_what_the_test_command_needs():
    text = readme()
    section = text[text.index("## The two commands"):text.index("## Quick start")]
    for need in ["cargo", "python3", "npm", "apt-get", "root"]:
        assert need in section, need


def test_readme_python_snippet_runs_as_written(server, app):
    text = readme()
    snippet = re.search(r"### With the official JPush Python client.*?```python\n(.*?)```",
                        text, re.S).group(1)
    # The only edits a reader makes: the two values `pigeon app create` printed, and the
    # address of this test's server.
    snippet = re.sub(r'app_key = "[^"]*"', f'app_key = "{app["app_key"]}"', snippet)
    snippet = re.sub(r'master_secret = "[^"]*"', f'master_secret = "{app["master_secret"]}"',
                     snippet)
    snippet = snippet.replace("http://127.0.0.1:8080", server.base)
    device = Device(server, app["app_key"])
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "msg_id" in out.stdout, out.stdout
    got = device.pushes(1)
    assert got[0]["notification"]["alert"] == "Hello"
