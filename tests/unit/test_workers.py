"""Process set-up shared by Ray workers and the CLI."""
import subprocess
import sys
import textwrap


def test_quiet_libraries_silences_diffusers_and_transformers_imported_later_without_importing_them():
    """An actor that never loads diffusers must not pay its import to silence it; one that loads it afterwards must
    still get no INFO logs and no loading progress bars. A fresh interpreter, since pytest has imported both."""
    script = textwrap.dedent("""
        import logging, os, sys
        for var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
            os.environ.pop(var, None)
        from facegen.workers import quiet_libraries
        quiet_libraries()
        assert "diffusers" not in sys.modules and "transformers" not in sys.modules
        import diffusers, transformers
        from diffusers.utils import logging as dlog
        assert dlog.get_verbosity() == logging.ERROR
        assert transformers.utils.logging.get_verbosity() == logging.ERROR
        assert dlog.tqdm(range(2), desc="Loading pipeline components...").disable
        assert not transformers.utils.logging.is_progress_bar_enabled()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_quiet_libraries_silences_libraries_already_imported(monkeypatch):
    import logging
    import os

    import diffusers
    import transformers
    from facegen.workers import quiet_libraries

    monkeypatch.setattr(os, "environ", os.environ.copy())  # the variables it sets stay out of this test process
    monkeypatch.setattr(diffusers.utils.logging, "_tqdm_active", True)
    monkeypatch.setattr(transformers.utils.logging, "_tqdm_active", True)
    before = (diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity())
    try:
        diffusers.utils.logging.set_verbosity_info()
        transformers.utils.logging.set_verbosity_info()
        quiet_libraries()
        assert diffusers.utils.logging.get_verbosity() == logging.ERROR
        assert transformers.utils.logging.get_verbosity() == logging.ERROR
        assert not diffusers.utils.logging.is_progress_bar_enabled()
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        diffusers.utils.logging.set_verbosity(before[0])
        transformers.utils.logging.set_verbosity(before[1])
