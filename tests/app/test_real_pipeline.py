"""The app on a real (tiny, random-weight) open_clip model: compute, cancel, and every page on the result."""
from __future__ import annotations

import pytest

from app import services
from app.state import RUN_CONFIG, AppRunConfig
from cv_core.errors import Cancelled


@pytest.fixture
def tiny_config(tiny_spec):
    return AppRunConfig(backbone=tiny_spec, dataset="digits", device="cpu", max_per_class=12)


def test_a_cancelled_computation_keeps_nothing(tiny_config):
    events = []
    with pytest.raises(Cancelled):
        services.compute_run(tiny_config, events.append, cancel=lambda: True)
    assert services.cached_run(tiny_config) is None


def test_every_page_works_on_a_real_run(tiny_config, new_app):
    stages = []
    run = services.compute_run(tiny_config, lambda ev: stages.append(ev.stage), None)
    assert any(s.startswith("finetune") for s in stages) and any(s.startswith("extract") for s in stages)
    assert services.cached_run(tiny_config) is run
    at = new_app()
    at.session_state[RUN_CONFIG] = tiny_config
    for page in ("app_pages/setup.py", "app_pages/geometry.py", "app_pages/arithmetic.py",
                 "app_pages/unlearning.py", "app_pages/export.py", "app_pages/presenter.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    at.switch_page("app_pages/unlearning.py").run()
    assert "neggrad" in at.multiselect(key="unlearn_methods").options  # encoder methods offered for a model
    sheet = services.thumbnail_sheet(tiny_config)  # the maps' hover images: every test image, in order
    n = len(run.ft["test"].labels)
    assert sheet["src"].startswith("data:image/png;base64,") and sheet["cols"] ** 2 >= n
    import base64
    import io

    import numpy as np
    from PIL import Image

    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(sheet["src"].split(",", 1)[1]))).convert("L"))
    first = np.asarray(run.images("test")[0][0].convert("L").resize((sheet["cell"],) * 2, Image.NEAREST))
    assert np.array_equal(grid[:sheet["cell"], :sheet["cell"]], first)
