"""The model cache: each preset loads once, even when many threads ask at the same moment; least recently used
models are evicted past `max_loaded`."""

import logging
import threading
from collections import Counter, OrderedDict

import torch

from ..loaders import ModelAdapter, load_adapter
from ..presets import Preset

logger = logging.getLogger(__name__)


class ModelCache:
    """Adapters by preset name, for one device and dtype. `load_count[name]` counts the loads of each preset."""

    def __init__(self, max_loaded: int, device: str, dtype: torch.dtype):
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}")
        self.max_loaded = max_loaded
        self.device = device
        self.dtype = dtype
        self.load_count: Counter[str] = Counter()
        self._loaded: OrderedDict[str, ModelAdapter] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards _loaded, _load_locks and load_count; never held while loading
        self._load_locks: dict[str, threading.Lock] = {}  # one per preset: held while that preset loads

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded presets, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def load(self, preset: Preset) -> ModelAdapter:
        """The adapter of `preset`, loading it on first use; raises PresetUnavailableError if it can't."""
        name = preset.name
        with self._lock:
            if (adapter := self._touch(name)) is not None:
                return adapter
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:  # threads asking for the same preset wait here; other presets load in parallel
            with self._lock:
                if (adapter := self._touch(name)) is not None:
                    return adapter
            adapter = load_adapter(preset, self.device, self.dtype)
            with self._lock:
                self.load_count[name] += 1
                self._loaded[name] = adapter
                while len(self._loaded) > self.max_loaded:
                    evicted, _ = self._loaded.popitem(last=False)
                    logger.info("evicted %s (more than %d models loaded)", evicted, self.max_loaded)
        return adapter

    def _touch(self, name: str) -> ModelAdapter | None:
        adapter = self._loaded.get(name)
        if adapter is not None:
            self._loaded.move_to_end(name)
        return adapter
