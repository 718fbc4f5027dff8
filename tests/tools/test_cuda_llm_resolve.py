"""tools/cuda_llm_resolve.py (`make llm-cuda-check`), without the network: the platform
tags a GPU node's glibc takes, and the requirements resolved beside vLLM. The
resolution itself reads PyPI, so it is a make target, not a test."""

import re
from pathlib import Path

import pytest

from tools.cuda_llm_resolve import platform_tags, project_requirements

ROOT = Path(__file__).resolve().parents[2]


def test_a_nodes_glibc_takes_every_older_manylinux_tag():
    tags = platform_tags("2.35", "x86_64")
    # vLLM 0.33's wheels, llguidance's and torch's dependencies' (pip takes a wheel only
    # for a tag it is given, and does not widen a manylinux tag to older ones itself)
    for needed in ("manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux2014_x86_64",
                   "manylinux_2_35_x86_64", "manylinux_2_17_x86_64"):
        assert needed in tags
    assert "manylinux_2_36_x86_64" not in tags and tags[0] == "manylinux_2_35_x86_64"
    assert "manylinux_2_31_aarch64" not in platform_tags("2.28", "aarch64")
    with pytest.raises(ValueError, match="2.17 or newer"):
        platform_tags("2.12", "x86_64")


def test_it_resolves_what_make_setup_installs_on_a_gpu_node():
    import inspect

    import tools.cuda_llm_resolve as tool

    requirements = project_requirements(("llm", "dev", "ray"))
    assert "numpy==2.3.5" in requirements and "gguf==0.19.0" in requirements
    assert any(r.startswith("ray==") for r in requirements)
    assert any(r.startswith("pytest==") for r in requirements)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^VLLM_CUDA := vllm==\S+$", makefile, re.M)
    assert '--vllm "$(VLLM_CUDA)"' in makefile
    # .venv-llm on CUDA is installed in the one resolution the check makes
    assert '$(VLLM_CUDA) -e ".[llm,dev,ray]"' in makefile
    assert 'default="llm,dev,ray"' in inspect.getsource(tool)
