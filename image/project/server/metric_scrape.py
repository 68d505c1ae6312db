"""Scrapes of the multiprocess metrics directory (PROMETHEUS_MULTIPROC_DIR) whose cost is the values, not the keys.

prometheus_client's ``MultiProcessCollector`` re-reads every file on each scrape, json-decodes every key of every
file, merges the samples through dicts of dicts and hands about 2,000 ``Sample`` tuples to the text encoder, which
escapes and sorts every sample's labels again: about 40 ms of one core for 4 workers x 100 routes, most of it for
keys and labels that have not changed since the previous scrape. ``DirectoryScraper`` (one per worker process)
keeps what does not change between scrapes:

* per file, the layout of its entries (a file only ever grows: prometheus_client's ``MmapedDict`` appends keys and
  never moves one), parsed once with ``json``, so a scrape reads the file and picks its values by position; only
  entries appended since the previous scrape are parsed. The format is the one ``MmapedDict``'s docstring
  describes; prometheus_client reads it with its private ``mmap_dict._read_all_values``, which yields every key
  decoded on each call, so it is parsed here (``_parse``), and ``tests/runtime/test_metric_scrape.py`` fails when
  the format or the merge changes. The file stays open while it is cached, so its inode
  cannot be reused by another file while the cache believes it is the same one (a file replaced or removed, as
  a fold does, has another inode or none and is parsed afresh);
* per set of series, the exposition text with a ``%s`` where each value goes, made once per format by
  prometheus_client's own encoder (the one ``choose_encoder`` picked) on the merged families with a sentinel value
  in every sample, then checked line by line (one line per sample, each ending in the sentinel's text); an encoder
  whose output does not have that shape gets the merged families themselves, every scrape (as exact, slower);
* per value, its text (``floatToGoString``'s), made in bulk for the values not seen before: ``repr`` (which is
  ``floatToGoString``'s text of every finite value below 1e6) through ``map`` in C, ``floatToGoString`` itself for
  the others (Go's exponents, the infinities, NaN); the exposition tests fail when these texts differ;
* the gauges' merge, while the bytes of their files stay the same.

The merge is prometheus_client's ``MultiProcessCollector.merge(files, accumulate=True)`` for counters, histograms
and summaries: values of one series summed over the files in the same order (so sums are the same floats), a
histogram's buckets made cumulative and its ``_count`` the ``+Inf`` bucket. Gauges (a few per worker, with the
``pid`` label and a mode each) and the families of ``others`` go through prometheus_client's merge and encoder.
Files are read under the directory's shared lock (``server.metric_files.directory_lock``), so a fold is never seen
half done, with few system calls (one ``scandir``, one ``pread`` per file through descriptors kept open): under
load each lets the scraping thread wait for the GIL again behind the worker's request threads.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import struct
import threading
import operator
from operator import itemgetter
from typing import Any, Callable, Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from .metric_files import directory_lock, metric_file_listing

FAST_TYPES = ("counter", "histogram", "summary")  #: file types merged here; the others by prometheus_client
_HEAD = 1 << 16  # bytes read first: prometheus_client makes every file 64 KiB at least
_INT = struct.Struct("i")
_SENTINEL = 1.5e30  # the value in every sample of a template; its text ends each sample line
_MAX_TEMPLATES = 8  # formats kept per set of series (an Accept header may name any version)
_MAX_TEXTS = 50_000  # value texts kept (those of recent values)
_REPR_BELOW = 1e6  # floatToGoString(v) == repr(v) for every float v with -inf < v < this (Go's exponents above)
_MINUS_INF = float("-inf")

Encoder = Callable[[Any], bytes]


class _Families:
    """A collector (prometheus_client protocol) of a fixed list of families."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class _File:
    """One open metric file and the layout of its entries parsed so far."""

    __slots__ = ("fd", "ident", "typ", "used", "index", "slots", "getter", "serial", "gather", "targets", "span")

    def __init__(self, fd: int, ident: int, typ: str):
        self.fd, self.ident, self.typ = fd, ident, typ
        self.used = 8  # bytes parsed (the file's header is 8 bytes)
        self.index: list[int] = []  # per entry: where its value is, in doubles from the file's start
        self.slots: list[int] = []  # per entry: its merged series
        self.getter: Callable[[Any], tuple] = lambda doubles: ()
        self.serial = 0  # changes whenever the layout does
        #: Set by ``DirectoryScraper._compile``: ``span``, the targets (positions in the sums) of the series of the
        #: file's type; ``gather``, the file's values (plus a 0.0 last) in the order of those series, or None
        #: when two of its entries add to one series; then ``targets``: per entry, its series' target.
        self.span: tuple[int, int] = (0, 0)
        self.gather: Callable[[tuple], tuple] | None = None
        self.targets: list[int] = []

    def close(self) -> None:
        """Close the file (once; also when the object is collected, e.g. the cache of a forked parent)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    __del__ = close


def _getter(index: list[int]) -> Callable[[Any], tuple]:
    """A function of a sequence that returns the tuple of its items at ``index`` (in C, ``operator.itemgetter``)."""
    if len(index) == 1:
        only = index[0]
        return lambda seq: (seq[only],)
    return itemgetter(*index) if index else (lambda seq: ())


def _encoder_key(encoder: Encoder) -> Any:
    """What identifies an encoder: choose_encoder makes a new ``functools.partial`` for every call."""
    func = getattr(encoder, "func", None)
    if func is None:
        return encoder
    return func, getattr(encoder, "args", ()), tuple(sorted(getattr(encoder, "keywords", {}).items()))


class DirectoryScraper:
    """Scrapes of one multiprocess directory, the unchanging parts kept between scrapes (the module docstring).
    Thread-safe (one scrape at a time per scraper); a forked child starts afresh.

    Args:
        directory: the multiprocess directory (PROMETHEUS_MULTIPROC_DIR).
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._serials = itertools.count(1)
        self._slot_of_key: dict[tuple[str, bytes], int] = {}  # (file type, key as written) -> series
        self._slot_of_id: dict[tuple, int] = {}  # what the merge sums over -> series
        self._slot_info: list[tuple] = []  # per series: (metric name, type, help, group labels, sample name, le)
        self._layout: tuple = ()  # the serials of the files of the last program
        self._present: list[int] = []  # the series in those files, ascending
        self._program: list[tuple[int, Any]] = []  # how the merged values are read off the sums, in text order
        self._families: list[Metric] = []  # the merged families, value-less (samples made on demand)
        self._templates: dict[Any, str | None] = {}  # encoder -> exposition with %s per value, None: no template
        self._texts: dict[float, str] = {}  # value -> its text
        self._gauge_bytes: tuple = ()  # the files prometheus_client merges (gauges): (path, bytes used) of each...
        self._gauges: list[Metric] = []  # ... and their merged families, made again when those bytes change

    def expose(self, encoder: Encoder, others: Iterable[Any] = ()) -> bytes:
        """The exposition of every metric file in the directory plus the families of the collectors ``others``,
        in ``encoder``'s format (a function of a collector, as ``prometheus_client.exposition.choose_encoder``
        returns): counters, histograms and summaries first, then gauges and ``others`` (OpenMetrics' ``# EOF``
        last).

        Raises:
            OSError: the directory or a file in it cannot be read.
            RuntimeError: a file is corrupt (prometheus_client's message and meaning).
        """
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            with directory_lock(self.directory, fcntl.LOCK_SH):
                listing = metric_file_listing(self.directory)
                self._close_gone(listing)
                read = self._read([entry for entry in listing if entry[2] in FAST_TYPES])
                gauges = self._merged_gauges([entry for entry in listing if entry[2] not in FAST_TYPES])
            layout = tuple(file.serial for file, _ in read)
            if layout != self._layout:
                self._compile([file for file, _ in read], layout)
            values = self._values(self._sum(read))
            rest = gauges + [family for collector in others for family in collector.collect()]
            template = self._template_for(encoder, len(values))
            if template is None:  # an encoder not of the expected shape: the merged families, as exact
                return encoder(_Families(self._with_values(values) + rest))
            return self._fill(template, values) + encoder(_Families(rest))

    # --- reading ---------------------------------------------------------------------------------------------

    def _close_gone(self, listing: list[tuple[str, int, str]]) -> None:
        """Close the cached files whose paths are no longer in ``listing``."""
        seen = {path for path, _, _ in listing}
        for path in [path for path in self._files if path not in seen]:
            self._files.pop(path).close()

    def _read(self, listing: list[tuple[str, int, str]]) -> list[tuple[_File, tuple]]:
        """Read the files of ``listing``; return each file read with its values, in the order of its entries."""
        read = []
        for path, inode, typ in listing:
            file, data = self._open(path, inode, typ)
            if file is None:
                continue
            doubles = memoryview(data)[: len(data) // 8 * 8].cast("d")
            try:
                read.append((file, file.getter(doubles)))
            finally:
                doubles.release()
        return read

    def _merged_gauges(self, listing: list[tuple[str, int, str]]) -> list[Metric]:
        """prometheus_client's merge (``MultiProcessCollector.merge``) of the files of ``listing`` (gauges, whose
        modes it knows), made again only when their bytes changed since the previous scrape (read through the
        cached descriptors, one ``pread`` each: a merge opens and reads each file again)."""
        current = []
        for path, inode, typ in listing:
            file, data = self._open(path, inode, typ, parse=False)
            if file is not None:
                current.append((path, data))
        snapshot = tuple(current)
        if snapshot != self._gauge_bytes:
            self._gauges = list(MultiProcessCollector.merge([path for path, _ in current], accumulate=True))
            self._gauge_bytes = snapshot
        return self._gauges

    def _sum(self, read: list[tuple[_File, tuple]]) -> list[float]:
        """The sum of the files' values per series present (files in the order given, entries in file order, as
        prometheus_client sums them; adding the 0.0 of a series a file lacks changes no sum)."""
        sums = [0.0] * len(self._present)
        for file, values in read:
            if file.gather is not None:
                low, high = file.span
                sums[low:high] = map(operator.add, sums[low:high], file.gather(values + (0.0,)))
            else:
                for target, value in zip(file.targets, values):
                    sums[target] += value
        return sums

    def _open(self, path: str, inode: int, typ: str, parse: bool = True) -> tuple[_File | None, bytes]:
        """The cached file at ``path`` (opened afresh when the path now names another file than the cached one:
        ``inode`` from the directory listing) and its bytes: with ``parse``, its layout brought up to date and the
        bytes read (at least those in use); without, just the bytes in use. (None, b"") when it is gone."""
        file = self._files.get(path)
        if file is None or file.ident != inode:
            if file is not None:
                self._files.pop(path).close()
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None, b""
            file = self._files[path] = _File(fd, os.fstat(fd).st_ino, typ)
        data = os.pread(file.fd, max(_HEAD, file.used), 0)  # all of it, unless it grew
        used = _INT.unpack_from(data, 0)[0] if len(data) >= 8 else 0  # shorter: being created, not sized yet
        if used > len(data):
            data = os.pread(file.fd, used, 0)
            if used > len(data):
                raise RuntimeError("Read beyond file size detected, file is corrupted.")
        used = max(used, 8)
        if not parse:
            return file, data[:used]
        if used < file.used:  # cannot happen to an MmapedDict file; parse it again rather than misread it
            file.used, file.index, file.slots = 8, [], []
            file.getter, file.serial = _getter([]), next(self._serials)
        if used > file.used:
            self._parse(file, data, used)
        return file, data

    def _parse(self, file: _File, data: bytes, used: int) -> None:
        """Add the entries of ``data`` from ``file.used`` to ``used`` to the file's layout (prometheus_client's
        ``MmapedDict`` format: int32 key length, utf-8 json key padded to 8 bytes, two doubles)."""
        pos, index, slots = file.used, [], []  # the file's layout changes only once all of it is read
        while pos < used:
            length = _INT.unpack_from(data, pos)[0]
            if length + pos > used:
                raise RuntimeError("Read beyond file size detected, file is corrupted.")
            key = data[pos + 4: pos + 4 + length]
            pos += 4 + length + (8 - (length + 4) % 8)
            if pos + 16 > used:
                raise RuntimeError("Read beyond file size detected, file is corrupted.")
            slot = self._slot_of_key.get((file.typ, key))
            if slot is None:
                slot = self._slot_of_key[(file.typ, key)] = self._series(file.typ, key)
            index.append(pos // 8)
            slots.append(slot)
            pos += 16
        file.index += index
        file.slots += slots
        file.used = used
        file.getter = _getter(file.index)
        file.serial = next(self._serials)

    def _series(self, typ: str, key: bytes) -> int:
        """The series a key adds to (prometheus_client's merge: a sample's name and sorted labels within its
        metric; a histogram bucket's labels without ``le`` and its bound as a float)."""
        metric_name, name, labels, help_text = json.loads(key.decode("utf-8"))
        labels_key = tuple(sorted(labels.items()))
        le = None
        if typ == "histogram":
            for label, value in labels_key:
                if label == "le":
                    le = float(value)
                    labels_key = tuple(item for item in labels_key if item[0] != "le")
                    break
        identity = (metric_name, labels_key, le) if le is not None else (metric_name, labels_key, name)
        slot = self._slot_of_id.get(identity)
        if slot is None:
            slot = self._slot_of_id[identity] = len(self._slot_info)
            self._slot_info.append((metric_name, typ, help_text, labels_key, name, le))
        return slot

    # --- merging and text --------------------------------------------------------------------------------------

    def _compile(self, files: list[_File], layout: tuple) -> None:
        """Lay out the families of the series in ``files``: per metric (in order of first sight), per label set,
        its samples, then a histogram's cumulative buckets (by bound) and ``_count``. When the series are those of
        the previous layout, only the files' part is redone (the families and their templates stay)."""
        info = self._slot_info
        present = sorted(set().union(*(file.slots for file in files)), key=lambda slot: (info[slot][1], slot))
        target_of = {slot: target for target, slot in enumerate(present)}
        first = {}  # file type -> its range of targets (the series of one type are contiguous)
        for target, slot in enumerate(present):
            first.setdefault(info[slot][1], [target, target])[1] = target + 1
        for file in files:
            file.targets = [target_of[slot] for slot in file.slots]
            entry_of = {slot: entry for entry, slot in enumerate(file.slots)}
            file.span = tuple(first.get(file.typ, (0, 0)))
            if len(entry_of) == len(file.slots):
                missing = len(file.slots)
                file.gather = _getter([entry_of.get(slot, missing) for slot in present[file.span[0]:file.span[1]]])
            else:
                file.gather = None
        self._layout = layout
        if present == self._present and self._families:  # e.g. a fold: the same series, in other files
            return
        metrics: dict[str, tuple[Metric, dict]] = {}
        for slot in present:
            metric_name, typ, help_text, labels_key, name, le = self._slot_info[slot]
            if metric_name not in metrics:
                metrics[metric_name] = (Metric(metric_name, help_text, typ), {})
            plain, buckets = metrics[metric_name][1].setdefault(labels_key, ([], []))
            (plain if le is None else buckets).append((le, name, slot))
        program: list[tuple[int, Any]] = []
        self._families = []
        for metric, groups in metrics.values():
            samples: list[tuple[str, dict]] = []
            for labels_key, (plain, buckets) in groups.items():
                count_name = metric.name + "_count"
                if buckets:  # the _count a histogram's merge makes replaces one read from a file
                    plain = [entry for entry in plain if entry[1] != count_name]
                for _, name, slot in plain:
                    program.append((target_of[slot], None))
                    samples.append((name, dict(labels_key)))
                if buckets:
                    buckets.sort()
                    program.append((len(buckets), _getter([target_of[slot] for _, _, slot in buckets])))
                    for le, _, _ in buckets:
                        samples.append((metric.name + "_bucket", dict(labels_key + (("le", floatToGoString(le)),))))
                    samples.append((count_name, dict(labels_key)))
            metric.samples = samples  # type: ignore[assignment]  # names and labels; values added per use
            self._families.append(metric)
        self._program = program
        self._present = present
        self._templates = {}

    def _values(self, sums: list[float]) -> list[float]:
        """The merged values in the order of ``_families``' samples."""
        out: list[float] = []
        append, extend = out.append, out.extend
        for slot, getter in self._program:
            if getter is None:
                append(sums[slot])
            else:
                cumulative = list(itertools.accumulate(getter(sums)))
                extend(cumulative)
                append(cumulative[-1])
        return out

    def _with_values(self, values: Iterable[float]) -> list[Metric]:
        """Copies of ``_families`` with ``values`` in their samples, in order."""
        values = iter(values)
        families = []
        for template in self._families:
            metric = Metric(template.name, template.documentation, template.type)
            for name, labels in template.samples:  # type: ignore[misc]
                metric.add_sample(name, labels, next(values))
            families.append(metric)
        return families

    def _template_for(self, encoder: Encoder, count: int) -> str | None:
        """The template of ``encoder`` for the current families (made on first use)."""
        key = _encoder_key(encoder)
        if key not in self._templates:
            if len(self._templates) >= _MAX_TEMPLATES:
                self._templates.pop(next(iter(self._templates)))
            self._templates[key] = self._template(encoder, count)
        return self._templates[key]

    def _fill(self, template: str, values: list[float]) -> bytes:
        """``template`` with the text of each value (``floatToGoString``'s, kept per value; see the module
        docstring): the values not yet known are looked up and made in bulk, the rest read from the cache."""
        texts = self._texts
        if len(texts) > _MAX_TEXTS:
            texts.clear()
        new = set(values).difference(texts)
        if new:
            texts.update(zip(new, map(repr, new)))
            for value in new:
                if not _MINUS_INF < value < _REPR_BELOW:  # NaN too: every comparison with it is False
                    texts[value] = floatToGoString(value)
        return (template % tuple(map(texts.__getitem__, values))).encode("utf-8")

    def _template(self, encoder: Encoder, count: int) -> str | None:
        """``encoder``'s text of ``_families`` with ``%s`` for each value, None when its output is not one line
        per sample, in order, each ending with the value."""
        text = self._strip_trailer(encoder, encoder(_Families(self._with_values([_SENTINEL] * count))))
        if text is None:
            return None
        ending = " " + floatToGoString(_SENTINEL)
        parts, samples = [], 0
        for line in text.decode("utf-8").split("\n")[:-1]:
            if line.startswith("#"):
                parts.append(line.replace("%", "%%") + "\n")
            elif line.endswith(ending):
                parts.append(line[: -len(ending) + 1].replace("%", "%%") + "%s\n")
                samples += 1
            else:
                return None
        return "".join(parts) if samples == count else None

    @staticmethod
    def _strip_trailer(encoder: Encoder, text: bytes) -> bytes | None:
        """``text`` without what ``encoder`` writes after the last family (OpenMetrics' ``# EOF``), None when it
        does not end with it."""
        trailer = encoder(_Families([]))
        if not text.endswith(trailer):
            return None
        return text[: len(text) - len(trailer)] if trailer else text
