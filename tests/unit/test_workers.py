"""Process set-up shared by Ray workers and the CLI."""
import subprocess
import sys
import textwrap


def test_quiet_libraries_silences_model_loading_imported_later_without_importing_it():
    """An actor that never loads diffusers must not pay its import to silence it; one that loads a model afterwards
    must print no loading bar and no INFO log. A fresh interpreter (pytest has imported both libraries), with tqdm
    imported first, as Ray has in every worker."""
    script = textwrap.dedent("""
        import logging, sys
        import tqdm
        from facegen.cluster.workers import quiet_libraries
        quiet_libraries()
        assert "diffusers" not in sys.modules and "transformers" not in sys.modules
        from facegen.core.bases import SD21
        SD21.load("tiny:sd21")
        import diffusers, transformers
        assert diffusers.utils.logging.get_verbosity() == logging.ERROR
        assert transformers.utils.logging.get_verbosity() == logging.ERROR
        assert not transformers.utils.logging.is_progress_bar_enabled()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "Loading" not in done.stderr and "it/s" not in done.stderr, done.stderr[-2000:]


def test_quiet_libraries_silences_libraries_already_imported(monkeypatch):
    import logging
    import os

    import diffusers
    import transformers
    from facegen.cluster.workers import quiet_libraries

    monkeypatch.setattr(os, "environ", os.environ.copy())  # the variable it sets stays out of this test process
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
