"""conftest.in_own_namespace: the outer test passes only when its run inside the namespace ran
the test and it passed (a skip inside once counted as a pass: a cluster test could pass having run
nothing); tests that share a module-scoped fixture (tests/shared_namespace.py) run in one namespace
together, and each outer test passes only when its own test passed there. Checked on a test module
of the test's own, run by pytest as the suite would."""

import os
import re
import subprocess
import sys

import pytest
from conftest import need

from nirvana import paths

SAMPLE = '''
import sys
sys.path.insert(0, {tests!r})
import pytest
from conftest import in_own_namespace, plain_nodeid
from shared_namespace import in_shared_namespace, inside, run_together


def test_skips_inside(request, tmp_path):
    if not in_own_namespace(request, tmp_path):
        return
    pytest.skip("nothing to check here")


def test_passes_inside(request, tmp_path):
    if not in_own_namespace(request, tmp_path):
        return
    assert os.environ.get("NIRVANA_TEST_NETNS") == plain_nodeid(request.node)


@pytest.fixture(scope="module")
def together(request, tmp_path_factory):
    yield run_together(request, tmp_path_factory.mktemp("in"), "together") if not inside() else []


def test_shared_skips_inside(request, together):
    if not in_shared_namespace(request, together):
        return
    pytest.skip("nothing to check here")


def test_shared_fails_inside(request, together):
    if not in_shared_namespace(request, together):
        return
    assert 5 == 4


def test_shared_passes_inside(request, together):
    if not in_shared_namespace(request, together):
        return
    assert len(os.environ["NIRVANA_TEST_NETNS"].split("\\n")) == 3   # the three in one run inside


import os
'''


@pytest.mark.slow
def test_a_skip_inside_its_namespace_fails_the_outer_test(tmp_path):
    # Given two tests run in their own namespace, one skipping inside, one passing inside, and three
    # run together in one namespace, one skipping, one failing, one passing inside
    (tmp_path / "test_sample.py").write_text(SAMPLE.format(tests=str(paths.ROOT / "tests")))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NIRVANA_TEST_NETNS", "PYTEST_ADDOPTS")}
    # When pytest runs them
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_sample.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # I expect the skip inside to fail its outer test, and the pass inside to pass it
    assert "PASSED test_sample.py::test_passes_inside" in run.stdout, run.stdout[-3000:]
    assert "FAILED test_sample.py::test_skips_inside" in run.stdout, run.stdout[-3000:]
    assert "'skipped': 1" in run.stdout, run.stdout[-3000:]
    # and, together, the skip and the failure inside to fail their own outer tests only, saying why
    assert "PASSED test_sample.py::test_shared_passes_inside" in run.stdout, run.stdout[-3000:]
    for name, outcome, why in (("skips", "skipped", "nothing to check here"), ("fails", "failed", "assert 5 == 4")):
        assert f"FAILED test_sample.py::test_shared_{name}_inside" in run.stdout, run.stdout[-3000:]
        said = rf"AssertionError: test_shared_{name}_inside: {outcome} inside, not passed:\nE\s+{why}\n"
        assert re.search(said, run.stdout), run.stdout[-3000:]


@pytest.mark.parametrize(("what", "says"), [
    ("etcd (on PATH, to run a throwaway one)", "etcd (on PATH, to run a throwaway one) is missing: install it"),
    ("RabbitMQ's server (apt package rabbitmq-server)", "is missing: install it"),
    ("RabbitMQ on 127.0.0.1:5672", "is not answering: start the stack with `./kit up`"),
])
def test_a_skip_names_the_real_reason(what, says):
    # a program missing is not a stack to start; a service not answering is
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception), match=None) as raised:
        need(what, False)
    assert says in str(raised.value), str(raised.value)
