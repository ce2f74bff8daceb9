"""The borrow-site recorders, C (_sight.c) and pure Python: the same answer, no frame kept,
threadpool_db's own frames skipped, and sampling at the configured share. No database."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from typing import Any

import pytest

from threadpool_db import ConnectionPool, leaks

from .fakes import Factory
from .helpers import line_of, require_native


def _recorders(capture: str, rate: float = 0.0) -> dict[str, Any]:
    """Both recorders, configured alike, as LeakDetector builds them."""
    native = require_native()
    out = {"C": leaks.LeakDetector(60.0, capture, rate, False, 2.0).sight}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(leaks, "NATIVE", None)
        out["Python"] = leaks.LeakDetector(60.0, capture, rate, False, 2.0).sight
    assert type(out["C"]) is native and type(out["Python"]) is not native
    return out


def _plays_getconn(sight: Any) -> Any:
    """Stands where getconn stands: the recorder is called by it, for its caller."""
    return sight()


def _user_code(recorders: dict[str, Any]) -> tuple[dict[str, Any], int]:
    out = {}
    for name, sight in recorders.items():
        out[name] = _plays_getconn(sight)  # SITE: both calls come from this very instruction
    return out, id(sys._getframe())


@pytest.mark.parametrize("capture", ["off", "full"])
def test_the_c_and_python_recorders_record_the_same_site_and_stack(capture):
    got, frame_id = _user_code(_recorders(capture))
    c, py = tuple(got["C"]), tuple(got["Python"])
    assert c[:3] == py[:3]  # code, bytecode offset, frame id
    assert c[0] is _user_code.__code__ and c[2] == frame_id
    assert leaks.where(c[0], c[1]) == f"{__file__}:{line_of(_user_code, '# SITE')}"
    if capture == "off":
        assert c[3] is None and py[3] is None
    else:
        assert c[3] == py[3]  # ((code, offset), ...) innermost first
        assert c[3][0] == (c[0], c[1])
        assert c[3][1][0] is test_the_c_and_python_recorders_record_the_same_site_and_stack.__code__
        assert len(c[3]) <= leaks.CAPTURE_LIMIT


def test_a_shallow_stack_is_kept_whole_by_both_recorders():
    """A new thread's stack is shorter than the capture limit: all of it, the same in both."""
    recorders = _recorders("full")
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(_user_code(recorders)[0]))
    t.start()
    t.join(10)
    assert not t.is_alive() and got
    c, py = got[0]["C"][3], got[0]["Python"][3]
    assert c == py and 2 <= len(c) < leaks.CAPTURE_LIMIT
    assert c[-1][0].co_name == "_bootstrap"  # the thread's outermost frame: nothing cut off


def test_a_site_is_read_like_a_tuple():
    site = _user_code(_recorders("full"))[0]["C"]
    code, lasti, fid, stack = site
    assert len(site) == 4 and site[0] is code and site[1] == lasti and site[2] == fid and site[3] is stack
    with pytest.raises(IndexError):
        site[4]


def test_the_recorders_skip_threadpool_dbs_own_frames(recorder):
    pool = ConnectionPool(connect=Factory(), min_size=1, max_size=2, check="never", leak_threshold=60.0,
                          capture_stacks="off", name="sight-skip")  # fmt: skip
    try:
        pool.wait(10)
        with pool.connection():  # SKIP-SITE: through connection(), itself in threadpool_db
            rec = pool.borrowed()[0]
        line = line_of(test_the_recorders_skip_threadpool_dbs_own_frames, "# SKIP-SITE")
        assert rec["borrow_site"] == f"{__file__}:{line}"
        assert rec["borrow_function"] == "test_the_recorders_skip_threadpool_dbs_own_frames"
    finally:
        pool.close()


class _Witness:
    pass


def _borrower(sight: Any) -> tuple[Any, weakref.ref[_Witness]]:
    local = _Witness()  # lives in this frame only
    return _plays_getconn(sight), weakref.ref(local)


@pytest.mark.parametrize("capture", ["off", "full"])
def test_a_site_keeps_no_frame_alive(capture):
    for name, sight in _recorders(capture).items():
        site, witness = _borrower(sight)
        gc.collect()
        assert witness() is None, f"the {name} recorder kept the borrowing frame (and its locals) alive"
        assert site[0] is _borrower.__code__


def test_the_c_recorder_samples_the_configured_share():
    native = require_native()
    for rate, low, high in ((0.0, 0, 0), (0.25, 800, 1200), (1.0, 4000, 4000)):
        sight = native(leaks._PKG_DIR, 1, leaks.CAPTURE_LIMIT, False, rate)
        kept = sum(_plays_getconn(sight)[3] is not None for _ in range(4000))
        assert low <= kept <= high, (rate, kept)


def test_a_bad_recorder_configuration_is_refused():
    native = require_native()
    with pytest.raises(ValueError, match="rate"):
        native(leaks._PKG_DIR, 1, 24, False, 1.5)
    with pytest.raises(TypeError):
        native(leaks._PKG_DIR, 1, 24, False, 0.0)(1)


def _fake_pool(name: str) -> ConnectionPool:
    pool = ConnectionPool(connect=Factory(), min_size=1, max_size=2, check="never", leak_threshold=60.0,
                          capture_stacks="off", name=name)  # fmt: skip
    pool.wait(10)
    return pool


def _site_of_the_one_borrow(pool: ConnectionPool) -> tuple[str, str]:
    (rec,) = pool.borrowed()
    assert not rec["borrow_site"].startswith(str(leaks._PKG_DIR)), rec["borrow_site"]
    return rec["borrow_site"], rec["borrow_function"]


def test_the_site_is_the_callers_line_through_routing_pool_connection(recorder):
    """RoutingPool.connection() -> RoutingPool.getconn() -> ConnectionPool.getconn(): two of
    the library's frames stand above the user's line, and both recorders skip them all."""
    from threadpool_db.routing import RoutingPool

    primary = _fake_pool("sight-routing")
    routing = RoutingPool(primary, name="sight-routing")
    me = test_the_site_is_the_callers_line_through_routing_pool_connection
    try:
        with routing.connection():  # ROUTED-WITH
            site = _site_of_the_one_borrow(primary)
        assert site == (f"{__file__}:{line_of(me, '# ROUTED-WITH')}", me.__name__)
        conn = routing.getconn()  # ROUTED-GETCONN
        site = _site_of_the_one_borrow(primary)
        routing.putconn(conn)
        assert site == (f"{__file__}:{line_of(me, '# ROUTED-GETCONN')}", me.__name__)
    finally:
        routing.close()
        primary.close()


def test_the_site_is_the_views_line_through_the_flask_extension(recorder):
    from flask import Flask

    from threadpool_db.flask import FlaskPool

    app = Flask("sight-flask")
    db = FlaskPool(app, connect=Factory(), min_size=1, max_size=2, check="never", leak_threshold=60.0,
                   capture_stacks="off")  # fmt: skip
    me = test_the_site_is_the_views_line_through_the_flask_extension
    try:
        with app.test_request_context("/"):
            db.connection()  # FLASK-SITE
            site = _site_of_the_one_borrow(db.pool)
        assert site == (f"{__file__}:{line_of(me, '# FLASK-SITE')}", me.__name__)
    finally:
        db.close(app)
