"""Scrapes of the multiprocess directory through server.metric_scrape.DirectoryScraper: the same exposition as
prometheus_client's own MultiProcessCollector + encoder, however the files change between scrapes."""

from __future__ import annotations

import os

import pytest
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from server.metric_files import fold_dead_worker
from server.metric_scrape import DirectoryScraper

ACCEPTS = [
    None,  # Prometheus text 0.0.4
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
]
GONE = 4_194_304  # above Linux's largest pid_max: no process has it, so a fold never skips it
ODD = 'quote " backslash \\ newline \n percent %s %% unicode é'


def write(directory, name: str, entries) -> MmapedDict:
    """Write ``entries`` (metric, sample name, labels, help, value[, timestamp]) into the prometheus_client mmap
    file ``name`` (``counter_12.db``...), as a worker's values would; return it open, for more writes."""
    file = MmapedDict(os.path.join(directory, name))
    for metric, sample, labels, help_text, value, *timestamp in entries:
        key = mmap_key(metric, sample, list(labels), list(labels.values()), help_text)
        file.write_value(key, value, timestamp[0] if timestamp else 0.0)
    return file


def requests(pid_values: dict[str, float], help_text: str = "HTTP requests.") -> list[tuple]:
    return [("http_requests", "http_requests_total", {"method": "GET", "endpoint": endpoint, "status": "200"},
             help_text, value) for endpoint, value in pid_values.items()]


def durations(endpoint: str, observed: list[float], bounds=(0.1, 0.5, 1.0, float("inf"))) -> list[tuple]:
    """The entries a worker's Histogram leaves for ``observed``: the sum, then the count per bucket (the first
    bound at or above each value; not cumulative)."""
    labels = {"endpoint": endpoint}
    counts = dict.fromkeys(bounds, 0)
    for seconds in observed:
        counts[next(bound for bound in bounds if seconds <= bound)] += 1
    entries = [("latency_seconds", "latency_seconds_sum", labels, "Latency.", sum(observed))]
    for bound, count in counts.items():
        le = "+Inf" if bound == float("inf") else repr(bound)
        entries.append(("latency_seconds", "latency_seconds_bucket", {**labels, "le": le}, "Latency.", count))
    return entries


def populate(directory) -> list[MmapedDict]:
    """Three workers (keys in different orders, some series in one worker only), a folded file, gauges of several
    modes, a summary, odd label values and help texts."""
    files = [
        write(directory, "counter_11.db", requests({"/a": 3.0, "/b": 1.0, ODD: 2.0}) + [
            ("jobs", "jobs_total", {}, "Jobs with 100% " + ODD, 4.0),
            ("sent_bytes", "sent_bytes_total", {}, "Bytes (Go's float text: 1.2345678e+07).", 12345678.0)]),
        write(directory, "counter_12.db", requests({"/b": 5.0, "/a": 0.5, "/only-12": 7.0}) + [
            ("jobs", "jobs_total", {}, "Jobs with 100% " + ODD, 0.25),
            ("sent_bytes", "sent_bytes_total", {"peer": "b"}, "Bytes (Go's float text: 1.2345678e+07).", 2.0 ** 70)]),
        write(directory, "counter_folded.db", requests({"/a": 100.0, "/gone": 9.0})),
        write(directory, "histogram_11.db", durations("/a", [0.05, 0.3, 2.0]) + durations(ODD, [0.75])),
        write(directory, "histogram_12.db", durations("/a", [0.5, 0.5]) + durations("/c", [], (0.25, float("inf")))),
        write(directory, "summary_12.db", [
            ("payload_bytes", "payload_bytes_count", {"kind": "json"}, "Payload sizes.", 2.0),
            ("payload_bytes", "payload_bytes_sum", {"kind": "json"}, "Payload sizes.", 1536.5)]),
        write(directory, "gauge_liveall_11.db", [("worker_rss_bytes", "worker_rss_bytes", {}, "RSS.", 1.5e7)]),
        write(directory, "gauge_liveall_12.db", [("worker_rss_bytes", "worker_rss_bytes", {}, "RSS.", 2.5e7)]),
        write(directory, "gauge_livesum_11.db", [("in_flight", "in_flight", {}, "In flight.", 2.0)]),
        write(directory, "gauge_livesum_12.db", [("in_flight", "in_flight", {}, "In flight.", 1.0)]),
        write(directory, "gauge_mostrecent_12.db", [("last_run", "last_run", {}, "Last run.", 7.0, 1700000000.0)]),
    ]
    return files


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def expected(directory, encoder) -> bytes:
    """prometheus_client's own scrape of ``directory`` in ``encoder``'s format."""
    files = sorted(str(path) for path in directory.glob("*.db"))
    return encoder(_Families(list(MultiProcessCollector.merge(files, accumulate=True))))


def assert_same(got: bytes, want: bytes, openmetrics: bool = False) -> None:
    """The same lines (the order of families and label sets may differ), OpenMetrics' ``# EOF`` once, last."""
    assert sorted(got.splitlines()) == sorted(want.splitlines())
    assert got.count(b"# EOF") == (1 if openmetrics else 0)
    if openmetrics:
        assert got.endswith(b"# EOF\n")
    else:  # and a parser reads every sample line as its own sample
        parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(got.decode()) for s in family.samples}
        assert len(parsed) == sum(1 for line in got.splitlines() if line and not line.startswith(b"#"))


@pytest.mark.parametrize("accept", ACCEPTS)
def test_same_exposition_as_prometheus_client(tmp_path, accept):
    populate(tmp_path)
    encoder, content_type = choose_encoder(accept)
    scraper = DirectoryScraper(str(tmp_path))
    for _ in range(2):  # the first scrape builds the template, the second fills it in
        assert_same(scraper.expose(encoder), expected(tmp_path, encoder), "openmetrics" in content_type)


def test_histograms_are_cumulative_with_their_count(tmp_path):
    """A merged histogram as a single process serves it: cumulative buckets, ``_count`` the ``+Inf`` bucket."""
    populate(tmp_path)
    text = DirectoryScraper(str(tmp_path)).expose(generate_latest).decode()
    samples = {(s.name, s.labels.get("le")): s.value for family in text_string_to_metric_families(text)
               if family.name == "latency_seconds" for s in family.samples if s.labels["endpoint"] == "/a"}
    assert [samples[("latency_seconds_bucket", le)] for le in ("0.1", "0.5", "1.0", "+Inf")] == [1, 4, 4, 5]
    assert samples[("latency_seconds_count", None)] == 5
    assert samples[("latency_seconds_sum", None)] == pytest.approx(3.35)


def test_changes_between_scrapes(tmp_path):
    """Values, new series in a file, a new worker, a fold (the folded file replaced, a worker's files removed), a
    file removed and made again at the same path with other series: each scrape equals prometheus_client's."""
    files = populate(tmp_path)
    scraper = DirectoryScraper(str(tmp_path))
    for accept in ACCEPTS[:2]:
        encoder, _ = choose_encoder(accept)
        assert_same(scraper.expose(encoder), expected(tmp_path, encoder), accept is not None)

    def check():
        for accept in ACCEPTS[:2]:
            encoder, _ = choose_encoder(accept)
            assert_same(scraper.expose(encoder), expected(tmp_path, encoder), accept is not None)

    counter_11 = files[0]
    counter_11.write_value(mmap_key("http_requests", "http_requests_total", ["method", "endpoint", "status"],
                                    ["GET", "/a", "200"], "HTTP requests."), 30.0, 0.0)
    check()
    for n in range(300):  # past the first 64 KiB the file doubles
        counter_11.write_value(mmap_key("http_requests", "http_requests_total", ["method", "endpoint", "status"],
                                        ["GET", f"/new/{n}" + "x" * 200, "200"], "HTTP requests."), n, 0.0)
    check()
    write(tmp_path, f"counter_{GONE}.db", requests({"/a": 1.0, "/new": 2.0})).close()
    write(tmp_path, f"histogram_{GONE}.db", durations("/a", [0.2])).close()
    check()
    assert fold_dead_worker(str(tmp_path), GONE) is True
    check()
    files[1].close()
    os.unlink(tmp_path / "counter_12.db")
    check()
    write(tmp_path, "counter_12.db", requests({"/b": 2.0, "/a": 1.0, "/c": 1.0}, help_text="HTTP requests.")).close()
    check()
    gauge_11 = files[6]  # gauges: merged by prometheus_client again only when a file's bytes change
    gauge_11.write_value(mmap_key("worker_rss_bytes", "worker_rss_bytes", [], [], "RSS."), 3.5e7, 0.0)
    check()
    write(tmp_path, f"gauge_liveall_{GONE}.db", [("worker_rss_bytes", "worker_rss_bytes", {}, "RSS.", 1.0)]).close()
    check()
    os.unlink(tmp_path / f"gauge_liveall_{GONE}.db")
    check()
    for file in files:
        file.close()


VALUE_TEXTS = [0.0, -0.0, 1.0, 3.0, 0.1, 1e-07, 2.5e-05, 123.456, 999999.0, 999999.9999, 1e6, 1000000.5, 1234567.0,
               12345678.9, 9.999999999e15, 1e16, 1.5e16, 2.0 ** 70, 1e22, -1.0, -999999.0, -1e6, -2.5e7, -1e17,
               float("inf"), float("-inf"), float("nan"), 0.1 + 0.2, 4503599627370497.0]


@pytest.mark.parametrize("accept", ACCEPTS[:2])
def test_every_kind_of_value_has_prometheus_clients_text(tmp_path, accept):
    """Each value's text is ``floatToGoString``'s: the scraper makes most of them with ``repr`` (the module
    docstring); Go's exponents from 1e6, the infinities and NaN, negatives, tiny and huge values included. Each value
    is in its own series, twice over two files (the merge sums them), and once alone."""
    entries = [("values", "values_total", {"n": str(n)}, "Values.", value) for n, value in enumerate(VALUE_TEXTS)]
    half = [(*entry[:4], entry[4] / 2) for entry in entries]
    write(tmp_path, "counter_11.db", entries).close()
    write(tmp_path, "counter_12.db", half).close()
    write(tmp_path, "counter_13.db", [("alone", "alone_total", {"n": str(n)}, "Alone.", value)
                                      for n, value in enumerate(VALUE_TEXTS)]).close()
    encoder, _ = choose_encoder(accept)
    scraper = DirectoryScraper(str(tmp_path))
    for _ in range(2):
        got = scraper.expose(encoder)
        assert sorted(got.splitlines()) == sorted(expected(tmp_path, encoder).splitlines())
    for text in (b" NaN", b" +Inf", b" -Inf", b" 1.234567e+06", b" 1e+06", b" 9.999999999e+15", b" -1e+17"):
        assert text in got, text


def test_a_file_not_yet_sized_is_empty(tmp_path):
    """A worker creating its file leaves it empty for a moment (prometheus_client's reader fails on it)."""
    populate(tmp_path)
    scraper = DirectoryScraper(str(tmp_path))
    want = expected(tmp_path, generate_latest)
    (tmp_path / f"counter_{GONE}.db").touch()
    assert_same(scraper.expose(generate_latest), want)


def test_gone_files_are_closed(tmp_path):
    """Files are kept open between scrapes; those of workers folded away are closed, so the scrape's open files
    do not grow with the workers that ever lived."""
    populate(tmp_path)
    scraper = DirectoryScraper(str(tmp_path))
    before = 0
    for n in range(30):
        write(tmp_path, f"counter_{GONE + n}.db", requests({"/a": 1.0, f"/w{n}": 1.0})).close()
        write(tmp_path, f"histogram_{GONE + n}.db", durations("/a", [0.2])).close()
        scraper.expose(generate_latest)
        assert fold_dead_worker(str(tmp_path), GONE + n) is True
        scraper.expose(generate_latest)
        before = before or len(os.listdir("/proc/self/fd"))  # after the first fold made histogram_folded.db
    assert_same(scraper.expose(generate_latest), expected(tmp_path, generate_latest))
    assert len(os.listdir("/proc/self/fd")) == before


def test_an_encoder_of_another_shape_gets_the_merged_families(tmp_path):
    """An encoder whose lines do not end with the value (here: a trailing space) gets real families, as exact."""
    populate(tmp_path)

    def encoder(collector):
        return generate_latest(collector).replace(b"\n", b" \n")

    got = DirectoryScraper(str(tmp_path)).expose(encoder)
    assert got.endswith(b" \n")
    assert_same(got.replace(b" \n", b"\n"), expected(tmp_path, generate_latest))


def test_others_come_after_the_files(tmp_path):
    """The families of ``others`` are in the same exposition, before OpenMetrics' single ``# EOF``."""
    from prometheus_client.metrics_core import GaugeMetricFamily

    populate(tmp_path)
    info = GaugeMetricFamily("stack_info", "Info.", labels=["version"])
    info.add_metric(["1"], 1)
    encoder, _ = choose_encoder("application/openmetrics-text; version=1.0.0")
    got = DirectoryScraper(str(tmp_path)).expose(encoder, [_Families([info])])
    want = encoder(_Families(list(MultiProcessCollector.merge(sorted(map(str, tmp_path.glob("*.db"))))) + [info]))
    assert_same(got, want, openmetrics=True)


def test_a_forked_child_starts_afresh(tmp_path):
    """The cache (open files, a lock) of a parent is not the child's: a child's scrape reads the files itself."""
    populate(tmp_path)
    scraper = DirectoryScraper(str(tmp_path))
    scraper.expose(generate_latest)
    read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = scraper.expose(generate_latest) == scraper.expose(generate_latest)
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read)
    assert_same(scraper.expose(generate_latest), expected(tmp_path, generate_latest))


def test_the_file_format_the_scraper_reads(tmp_path):
    """What DirectoryScraper assumes of prometheus_client's mmap files (its own parser is the private
    ``mmap_dict._read_all_values``): each value is a double at an 8-byte-aligned position that
    ``MmapedDict.read_all_values_from_file`` reports, and entries only ever get appended (a key's position never
    moves). When a release changes that, this fails first."""
    import struct

    path = tmp_path / "counter_1.db"
    file = write(tmp_path, path.name, requests({"/a": 1.0, "/bb": 2.0}))
    first = {key: pos for key, _, _, pos in MmapedDict.read_all_values_from_file(str(path))}
    for n in range(400):  # past the first 64 KiB
        file.write_value(mmap_key("m", "m_total", ["n"], [str(n) * 50], "h"), float(n), 0.0)
    file.write_value(next(iter(first)), 5.0, 0.0)
    file.close()
    data = path.read_bytes()
    entries = list(MmapedDict.read_all_values_from_file(str(path)))
    assert len(entries) == 402 and struct.unpack_from("i", data, 0)[0] % 8 == 0
    for key, value, _, pos in entries:
        assert pos % 8 == 0 and struct.unpack_from("d", data, pos)[0] == value
        encoded = key.encode()
        assert data[pos - len(encoded) - (8 - (len(encoded) + 4) % 8) - 4:][:4] == struct.pack("i", len(encoded))
    assert {key: pos for key, _, _, pos in entries if key in first} == first


def test_a_corrupt_file_is_prometheus_clients_error_and_leaves_the_cache_sound(tmp_path):
    """A new entry, then one whose key runs past the used length: RuntimeError, as prometheus_client's reader
    raises; once the file is sound again, the next scrape is exact (the half-read entries were not kept)."""
    import struct

    files = populate(tmp_path)
    scraper = DirectoryScraper(str(tmp_path))
    scraper.expose(generate_latest)
    path = tmp_path / "counter_11.db"
    files[0].write_value(mmap_key("jobs", "jobs_total", ["queue"], ["new"], "Jobs."), 3.0, 0.0)
    files[0].close()
    used = struct.unpack_from("i", path.read_bytes(), 0)[0]
    with open(path, "r+b") as file:
        file.write(struct.pack("i", used + 64))
        file.seek(used)
        file.write(struct.pack("i", 200))
    with pytest.raises(RuntimeError, match="corrupted"):
        scraper.expose(generate_latest)
    with pytest.raises(RuntimeError, match="corrupted"):
        list(MultiProcessCollector.merge([str(path)]))
    with open(path, "r+b") as file:
        file.write(struct.pack("i", used))
    assert_same(scraper.expose(generate_latest), expected(tmp_path, generate_latest))


def test_the_same_series_in_other_files_keep_their_template(tmp_path):
    """A fold or a new worker with series already served changes the files, not the families: the exposition is
    not made again by the encoder (only the families of ``others`` and gauges are, every scrape), and stays exact."""
    populate(tmp_path)
    calls = []

    def encoder(collector):
        calls.append(len(collector.collect()))
        return generate_latest(collector)

    scraper = DirectoryScraper(str(tmp_path))
    scraper.expose(encoder)
    write(tmp_path, f"counter_{GONE}.db", requests({"/a": 1.0, "/b": 2.0})).close()
    write(tmp_path, f"histogram_{GONE}.db", durations("/a", [0.2])).close()
    for change in (lambda: None, lambda: fold_dead_worker(str(tmp_path), GONE)):
        change()
        calls.clear()
        assert_same(scraper.expose(encoder), expected(tmp_path, generate_latest))
        assert len(calls) == 1  # the gauges' and others' families only
    write(tmp_path, f"counter_{GONE + 1}.db", requests({"/new": 1.0})).close()
    calls.clear()
    assert_same(scraper.expose(encoder), expected(tmp_path, generate_latest))
    assert len(calls) > 1  # a new series: a new template
