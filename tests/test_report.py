"""The comparison report's verdicts (load/report.py): every clause comes from the numbers."""

from __future__ import annotations

from load.phase import Phase
from load.report import recommended_line

META = {"cores": 4, "args": {"duration": 45, "recommended_duration": 20}}


def _phase(mode: str, max_size: int, ok_rps: float, p99: float, wait_p99: float, idle: float) -> Phase:
    return Phase(mode, max_size=max_size, ok_rps=ok_rps, p99=p99, cpu={"gunicorn": 50.0, "idle": idle},
                 pool_stats=[{"wait_p99_ms": wait_p99}])  # fmt: skip


def test_a_larger_recommendation_that_did_worse_is_not_called_fewer_connections():
    line = recommended_line([_phase("pooled", 8, 1200.0, 200.0, 5.0, 3.0),
                             _phase("recommended", 9, 1000.0, 400.0, 4.0, 2.0)], META)  # fmt: skip
    assert "recommended max_size 9 vs default 8" in line and "WORSE on goodput and p99" in line
    assert "more connections (9 vs 8 per worker)" in line and "fewer" not in line
    assert "4 cores were 98% busy" in line and "2-core" not in line
    assert "did not shorten the pool wait (p99 4.0 vs 5.0 ms)" in line
    assert "20 s against the default's 45 s" in line


def test_a_smaller_recommendation_that_queued_in_the_pool_says_so_with_the_waits():
    line = recommended_line([_phase("pooled", 8, 1200.0, 200.0, 5.0, 40.0),
                             _phase("recommended", 3, 1100.0, 300.0, 90.0, 50.0)], META)  # fmt: skip
    assert "fewer connections (3 vs 8 per worker)" in line
    assert "waited longer in the pool (p99 wait 90.0 vs 5.0 ms)" in line
    assert "50% busy" in line and "CPU-bound" not in line  # half idle is not CPU-bound


def test_an_equally_good_recommendation_says_so():
    line = recommended_line([_phase("pooled", 8, 1200.0, 200.0, 5.0, 3.0),
                             _phase("recommended", 4, 1190.0, 205.0, 6.0, 3.0)], META)  # fmt: skip
    assert line.endswith("as good as the default (within 5% on goodput and 10% on p99), with fewer connections "
                         "(4 vs 8 per worker)")  # fmt: skip


def test_a_recommendation_of_the_same_size_is_read_as_the_run_to_run_spread():
    line = recommended_line([_phase("pooled", 8, 1459.5, 180.0, 109.2, 10.0),
                             _phase("recommended", 8, 1382.0, 170.0, 85.0, 11.0)], META)  # fmt: skip
    assert "keeps the default size" in line and "-5.3% goodput is the run-to-run spread" in line
    assert "WORSE" not in line
