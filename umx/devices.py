"""Devices, streams, the defaults and the ``stream()`` context.

A :class:`Stream` is an ordered queue of work on one device; each owns an executor (a worker thread on the CPU, a
CUDA stream and its dispatcher on a GPU), created on first use. Streams are plain values: any thread may use any
stream. Defaults are read once, where a public op resolves its ``stream=`` argument (:func:`resolve_stream`).
"""

from __future__ import annotations

import enum
import itertools
import threading
import weakref

from . import backends

__all__ = [
    "DeviceType", "Device", "Stream", "cpu", "gpu", "default_device", "set_default_device", "default_stream",
    "set_default_stream", "new_stream", "stream", "StreamContext", "is_available", "device_count", "device_info",
    "synchronize", "clear_streams", "new_thread_local_stream", "new_thread_unsafe_stream", "ThreadLocalStream",
]


class DeviceType(enum.Enum):
    """The kinds of device: ``mx.cpu`` and ``mx.gpu``."""

    cpu = "cpu"
    gpu = "gpu"

    def __repr__(self) -> str:
        return f"DeviceType.{self.value}"

    def __str__(self) -> str:
        return f"DeviceType.{self.value}"


cpu = DeviceType.cpu
gpu = DeviceType.gpu


class Device:
    """A device: a type and an index, e.g. ``Device(gpu, 1)``."""

    __slots__ = ("type", "index", "__weakref__")

    def __new__(cls, type: DeviceType, index: int = 0):
        key = (type, index)
        dev = _DEVICES.get(key)
        if dev is None:
            if not isinstance(type, DeviceType):
                raise TypeError(f"Device: type must be mx.cpu or mx.gpu, got {type!r}")
            dev = object.__new__(cls)
            dev.type, dev.index = type, index
            dev = _DEVICES.setdefault(key, dev)
        return dev

    def __repr__(self) -> str:
        return f"Device({self.type.value}, {self.index})"

    def __eq__(self, other) -> bool:
        if isinstance(other, DeviceType):
            return self.type is other and self.index == 0
        return self is other

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __reduce__(self):
        return (Device, (self.type, self.index))


_DEVICES: dict = {}
_stream_counter = itertools.count()
_lock = threading.RLock()  # guards defaults and stream creation, never held while work runs (reentrant: signals)


class Stream:
    """An ordered queue of work on ``device``. Made by :func:`new_stream` or :func:`default_stream`."""

    __slots__ = ("device", "index", "_executor", "__weakref__")

    def __init__(self, device: Device, index: int):
        self.device = device
        self.index = index
        self._executor = None  # made on first use by the backend of device

    @property
    def executor(self):
        ex = self._executor
        if ex is None:
            with _lock:
                if self._executor is None:
                    self._executor = backends.get(self.device.type).make_executor(self)
                ex = self._executor
        return ex

    def __repr__(self) -> str:
        return f"Stream({self.device!r}, {self.index})"

    def __eq__(self, other) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def is_available(device) -> bool:
    """Whether ``device`` (a Device or DeviceType) can run work on this machine."""
    dev = _as_device(device)
    be = backends.get(dev.type)
    return be.available() and dev.index < be.device_count()


def device_count(device_type: DeviceType) -> int:
    """How many devices of ``device_type`` this machine has."""
    be = backends.get(device_type)
    return be.device_count() if be.available() else 0


def device_info(d=None) -> dict:
    """A dict describing device ``d`` (default: the default device), e.g. ``device_name`` and memory sizes.

    Args:
        d (Device | DeviceType, optional): the device.

    Returns:
        dict: its properties.
    """
    dev = _checked_device(d if d is not None else default_device())
    return backends.get(dev.type).device_info(dev.index)


def _as_device(device) -> Device:
    if isinstance(device, Device):
        return device
    if isinstance(device, DeviceType):
        return Device(device, 0)
    if isinstance(device, Stream):
        return device.device
    raise TypeError(f"expected a Device, DeviceType or Stream, got {type(device).__name__}")


def _checked_device(device) -> Device:
    dev = _as_device(device)
    if not is_available(dev):
        raise ValueError(f"{dev!r} is not available on this machine"
                         + ("" if dev.type is cpu else " (no usable CUDA GPU: install CuPy and a CUDA driver)"))
    return dev


# The process's default device and per-device default streams. Set under _lock, read without it (one load).
_default_streams: dict[Device, Stream] = {}
_default_device: list[Device] = []


class _Cache(dict):
    """A cache of resolved ``stream=`` arguments (weakly listed, so that a thread's own goes with it)."""

    __slots__ = ("__weakref__",)
    __hash__ = object.__hash__  # (by identity: one per thread in a WeakSet)

    def __eq__(self, other) -> bool:
        return self is other


# id of a stream= argument (None, a Device or a DeviceType: all immortal, so ids are never reused) -> the Stream it
# means now, for threads that set no default of their own. Every change of a default clears it and every
# thread's own cache (under _lock), so an entry is never stale.
_resolved: _Cache = _Cache()
_own_caches: weakref.WeakSet = weakref.WeakSet()


class _ThreadDefaults(threading.local):
    """What one thread set as its defaults (``with mx.stream(...)``, ``set_default_stream``), as in MLX, where
    default streams are per thread. A thread that set none reads the class attributes: the process's."""

    device: Device | None = None
    streams: dict | None = None  # Device -> Stream
    resolved: _Cache = _resolved  # ops look their stream= argument up here first


_thread = _ThreadDefaults()


def _own_defaults() -> _ThreadDefaults:
    """This thread's defaults, made its own (first call on a thread: empty, with a cache of its own)."""
    t = _thread
    if t.streams is None:
        t.streams = {}
        t.resolved = cache = _Cache()
        _own_caches.add(cache)
    return t


def _initial_default_device() -> Device:
    if not _default_device:
        with _lock:
            if not _default_device:
                _default_device.append(Device(gpu, 0) if is_available(gpu) else Device(cpu, 0))
    return _default_device[0]


def default_device() -> Device:
    """The device that ops use when given no ``stream``: the GPU when there is one, else the CPU (or what
    :func:`set_default_device`, or this thread's ``with mx.stream(...)``, made it)."""
    dev = _thread.device
    if dev is not None:
        return dev
    return _default_device[0] if _default_device else _initial_default_device()


def set_default_device(device) -> None:
    """Make ``device`` (a Device or DeviceType) the default. Raises ValueError if it is not available."""
    dev = _checked_device(device)
    with _lock:
        _default_device[:] = [dev]
        _defaults_changed()


def default_stream(device) -> Stream:
    """The default stream of ``device`` on this thread.

    Threads share each device's default stream until one sets its own (:func:`set_default_stream`, ``with
    mx.stream(...)``), which other threads do not see; umx streams may be used from any thread.
    """
    dev = _checked_device(device)
    own = _thread.streams
    if own:
        s = own.get(dev)
        if s is not None:
            return s
    return _process_default_stream(dev)


def _process_default_stream(dev: Device) -> Stream:
    s = _default_streams.get(dev)
    if s is None:
        with _lock:
            s = _default_streams.get(dev)
            if s is None:
                s = _default_streams[dev] = Stream(dev, next(_stream_counter))
                _defaults_changed()
    return s


def set_default_stream(stream: Stream) -> None:
    """Make ``stream`` the default stream of its device on this thread (other threads keep theirs).

    Args:
        stream (Stream): the new default stream.
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"set_default_stream: expected a Stream, got {type(stream).__name__}")
    with _lock:
        _own_defaults().streams[stream.device] = stream
        _defaults_changed()


def new_stream(device) -> Stream:
    """A new stream on ``device``; work on it may run in parallel with work on every other stream."""
    dev = _checked_device(device)
    with _lock:
        return Stream(dev, next(_stream_counter))


_version = [0]


def _defaults_changed() -> None:
    """MUST be called under _lock after any default changes."""
    _version[0] += 1
    _resolved.clear()
    for cache in list(_own_caches):
        cache.clear()


def new_thread_local_stream(device) -> Stream:
    """A new stream on ``device``. MLX's thread-local streams exist because its streams are bound to a thread;
    umx streams work from any thread, so this is :func:`new_stream`."""
    return new_stream(device)


def new_thread_unsafe_stream(device) -> Stream:
    """A new stream on ``device`` (umx streams are always thread-safe; see :func:`new_thread_local_stream`)."""
    return new_stream(device)


#: MLX's type of thread-local streams: in umx every Stream may be used from any thread
ThreadLocalStream = Stream


def resolve_stream(s) -> Stream:
    """The stream an op runs on, from its ``stream=`` argument: None, a Stream, a Device or a DeviceType."""
    cache = _thread.resolved
    st = cache.get(id(s))
    if st is not None:
        return st
    version = _version[0]
    st = _resolve(s)
    if type(s) is not Stream:
        with _lock:
            if version == _version[0]:  # no default changed meanwhile: the answer is current
                cache[id(s)] = st
    return st


def _resolve(s) -> Stream:
    if s is None:
        return default_stream(default_device())
    if type(s) is Stream:
        return s
    if isinstance(s, DeviceType):
        s = Device(s, 0)
    if isinstance(s, Device):
        return default_stream(s)
    raise TypeError(f"stream must be None, a Stream, a Device or a DeviceType, got {type(s).__name__}")


class StreamContext:
    """``with mx.stream(s):`` makes ``s`` (a Stream or Device) the default, restoring the old defaults on exit."""

    def __init__(self, s):
        self._target = s
        self._saved = None

    def __enter__(self):
        s = self._target
        st = s if isinstance(s, Stream) else default_stream(s)
        dev = st.device
        _checked_device(dev)
        with _lock:
            own = _own_defaults()
            self._saved = (own.device, dev, own.streams.get(dev))
            own.device = dev
            own.streams[dev] = st
            _defaults_changed()
        return st

    def __exit__(self, *exc):
        saved_device, dev, saved_stream = self._saved
        with _lock:
            own = _own_defaults()
            own.device = saved_device
            if saved_stream is None:
                own.streams.pop(dev, None)
            else:
                own.streams[dev] = saved_stream
            _defaults_changed()
        return False


def stream(s) -> StreamContext:
    """A context manager that makes ``s`` (a Stream, Device or DeviceType) the default stream and device.

    Example:
        >>> with mx.stream(mx.cpu):
        ...     c = a + b   # runs on the CPU's default stream
    """
    return StreamContext(s)


def synchronize(stream: Stream | None = None) -> None:
    """Wait until all work submitted to ``stream`` (default: every stream) has finished.

    An error raised by that work and not yet raised to a reader (an array started by ``async_eval`` and not
    read since) is raised here.

    Args:
        stream (Stream | Device | DeviceType, optional): the stream; default: every stream.
    """
    if stream is None:
        executors = backends.executors()
    else:
        s = resolve_stream(stream)
        executors = [s._executor] if s._executor is not None else []
    for ex in executors:
        ex.synchronize()
    for ex in executors:
        ex.raise_unraised()


def clear_streams() -> None:
    """Synchronize every stream (umx keeps streams alive; MLX frees their resources here)."""
    synchronize()
