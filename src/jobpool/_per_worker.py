"""``per_worker(factory, *args, **kwargs)``: call methods of objects that cannot travel.

A database connection, a socket, a lock, a loaded model: such an object cannot be pickled, so
its bound methods cannot be sent to a worker process. A handle sends the recipe instead, the
factory and its arguments, and each worker builds its own object from it the first time a job
calls a method through the handle, then keeps it for every later job (see ``_instances`` for
which worker owns which object, and how they are closed).

Pieces, and why they are shaped so:

- :class:`Recipe` holds the factory, its arguments, and a random token that names them wherever
  they go. Its bytes (pickle, then cloudpickle, as everything else) are made once, the first
  time the handle travels, so pickling a handle again costs only copying those bytes.
- :class:`PerWorker` is the handle. It has no attributes of its own that a method name could
  shadow; ``handle.name`` is a :class:`WorkerMethod`, made once per name.
- A :class:`WorkerMethod` pickles to the same small bytes every time, so the process backend
  keys it like any function it has seen (``pickled_once``): each worker keeps its unpickled copy
  and the per-job cost matches a plain module-level function's. There is one per (recipe, name)
  in a process, so it compares by identity, and calling it looks its bound method up in the
  calling worker's instances by identity (building the instance on first use).
- A ``map`` chunk looks the instance up once for all its items (:func:`bound`), so an item costs
  what a call of an ordinary bound method costs.
"""

from __future__ import annotations

import os
import pickle
import reprlib
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, overload

from . import _instances
from ._errors import SerializationError
from ._pickling_advice import explain_failure
from ._serialization import dumps

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from typing_extensions import ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_recipes: weakref.WeakValueDictionary[bytes, Recipe] = weakref.WeakValueDictionary()
_recipes_lock = threading.Lock()
# Set once any handle was pickled in this process: the Dask backend then installs what closes
# the instances its workers build (see _dask._per_worker).
_travelled = False


@overload
def per_worker(
    factory: Callable[P, AbstractContextManager[T]], /, *args: P.args, **kwargs: P.kwargs
) -> T: ...


@overload
def per_worker(factory: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...


def per_worker(factory: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """A handle on one ``factory(*args, **kwargs)`` per worker, built there on first use.

    Nothing is built here. ``handle.name`` is a callable that runs ``.name(...)`` on the
    calling worker's own instance: ``pool.map(db.insert, rows)`` sends each worker the factory
    and its arguments (pickled once), not an object that cannot be pickled. Each worker builds
    its instance the first time a job calls through the handle and reuses it for every later
    job: one per worker process on the process backend, one per worker thread on the thread
    backend, one per Dask worker (and pool) on Dask. Called outside a pool, a handle builds one
    instance in the calling thread. Handles may be passed inside a job's arguments, several per
    job, and ``handle(...)`` calls the instance itself.

    When a worker exits normally (shutdown, ``max_jobs_per_worker`` recycling), each instance
    it built is closed: ``close()`` if it has one; a context manager without ``close()`` is
    entered when built (jobs then use what ``__enter__`` returns) and exited then. Errors while
    closing are logged on the ``jobpool`` logger. A worker that crashes or is killed closes
    nothing.

    If the factory raises, the job that needed it fails with :class:`PerWorkerError` (naming
    the factory, carrying its exception and traceback); the next job tries again.

    Args:
        factory: what builds the object: a class, or a function returning it. It and its
            arguments must be picklable (plain data such as a path or URL), as a job's are.
        *args: positional arguments for ``factory``.
        **kwargs: keyword arguments for ``factory``.

    Returns:
        The handle. Type checkers see it as the object the factory makes (what its
        ``__enter__`` returns, for a context manager), so method calls are checked; only
        methods work through it at run time (see the "Pickling" page).
    """
    if not callable(factory):
        raise TypeError(
            f"per_worker needs the factory that builds the object (a class or a function) as "
            f"its first argument, then that factory's arguments; got a "
            f"{type(factory).__qualname__} object. Pass e.g. per_worker(Database, 'path.db'), "
            "not per_worker(Database('path.db')): each worker builds its own"
        )
    recipe = Recipe(os.urandom(16), _name_of(factory), (factory, args, kwargs))
    _recipes[recipe.token] = recipe  # so that a copy unpickled here is this very handle
    return PerWorker(recipe)


class Recipe:
    """What a handle builds (a factory and its arguments), named by a token wherever it goes."""

    __slots__ = ("__weakref__", "_bytes", "_call", "_methods", "factory_name", "token")

    def __init__(
        self, token: bytes, factory_name: str, call: Optional[_Call], data: Optional[bytes] = None
    ) -> None:
        self.token = token
        self.factory_name = factory_name
        self._call = call
        self._bytes = data
        self._methods: dict[str, WorkerMethod] = {}

    def load(self) -> _Call:
        """The factory and its arguments (unpickled on first use, in the worker that builds)."""
        if self._call is None:
            assert self._bytes is not None
            self._call = pickle.loads(self._bytes)
        return self._call

    def dumps(self) -> bytes:
        """The factory and its arguments as bytes, made the first time the handle travels.

        Later changes to a mutable argument are not seen: a worker builds its instance once
        anyway, so every worker builds from the same snapshot.
        """
        global _travelled
        _travelled = True
        data = self._bytes
        if data is None:
            assert self._call is not None
            try:
                data = self._bytes = dumps(self._call, "per_worker")
            except SerializationError as exc:
                # Raised while a job is pickled: the job's own error names the part from there.
                raise (exc.__cause__ or exc) from None
        return data

    def method(self, name: str) -> WorkerMethod:
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = WorkerMethod(self, name)
        return method

    def arguments_repr(self) -> str:
        if self._call is None:
            return "..."
        _, args, kwargs = self._call
        shown = [reprlib.repr(arg) for arg in args]
        shown += [f"{key}={reprlib.repr(value)}" for key, value in kwargs.items()]
        return ", ".join(shown)

    def parts(self, path: str) -> list[tuple[str, Any]]:
        """The factory and each argument, named for ``SerializationError.path``."""
        if self._call is None:
            return []
        factory, args, kwargs = self._call
        parts: list[tuple[str, Any]] = [(f"{path}.<per_worker factory>", factory)]
        parts += [(f"{path}.<per_worker args[{i}]>", arg) for i, arg in enumerate(args)]
        parts += [(f"{path}.<per_worker kwargs[{k!r}]>", v) for k, v in kwargs.items()]
        return parts


class PerWorker:
    """A handle made by :func:`per_worker`: ``handle.name(...)`` runs on the worker's instance.

    It has no public attributes of its own, so that every name is the instance's; setting
    one is refused, since it would not reach the instances, which live in the workers.
    """

    __slots__ = ("__dict__", "__recipe")
    __recipe: Recipe

    def __init__(self, recipe: Recipe) -> None:
        object.__setattr__(self, "_PerWorker__recipe", recipe)

    def __getattr__(self, name: str) -> WorkerMethod:
        if (name.startswith("__") and name.endswith("__")) or name.startswith("_PerWorker__"):
            # Protocols probe dunders (copy, pickle, numpy, inspect): the instance is not here.
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        method = self.__recipe.method(name)
        self.__dict__[name] = method  # the next lookup is a plain attribute hit
        return method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _instances.current().get(self.__recipe)(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set {name!r} on a per_worker handle: each worker has its own instance, "
            "built by the factory; set it there (in the factory, or in a method of the object)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete {name!r} from a per_worker handle")

    def __repr__(self) -> str:
        recipe = self.__recipe
        arguments = recipe.arguments_repr()
        return f"per_worker({recipe.factory_name}{', ' if arguments else ''}{arguments})"

    def __reduce__(self) -> tuple[Any, ...]:
        recipe = self.__recipe
        return (_restore_handle, (recipe.token, recipe.dumps(), recipe.factory_name))

    def __jobpool_parts__(self, path: str) -> list[tuple[str, Any]]:
        return self.__recipe.parts(path)


class WorkerMethod:
    """``handle.name``: calls ``name`` on the calling worker's instance (built on first use)."""

    __slots__ = ("_bytes", "_name", "_recipe")

    def __init__(self, recipe: Recipe, name: str) -> None:
        self._recipe = recipe
        self._name = name
        self._bytes: Optional[bytes] = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:  # on every call: this thread's instances, and their method for this one
            method = _instances._local.instances.methods[self]
        except (AttributeError, KeyError):
            method = self.bind()
        return method(*args, **kwargs)

    def bind(self) -> Callable[..., Any]:
        """The calling worker's instance's method (building the instance on first use)."""
        instances = _instances.current()
        method: Callable[..., Any] = getattr(instances.get(self._recipe), self._name)
        instances.methods[self] = method
        return method

    @property
    def __name__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<per_worker method {self._name} of {self._recipe.factory_name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        recipe = self._recipe
        return (_restore_method, (recipe.token, recipe.dumps(), recipe.factory_name, self._name))

    def __jobpool_parts__(self, path: str) -> list[tuple[str, Any]]:
        return self._recipe.parts(path)

    def pickled(self) -> bytes:
        """Its pickle, made once: the same bytes object every time (see ``pickled_once``)."""
        data = self._bytes
        if data is None:
            data = self._bytes = pickle.dumps(self, pickle.HIGHEST_PROTOCOL)
        else:
            self._recipe.dumps()  # mark it as travelled all the same
        return data


PICKLED_ONCE = (PerWorker, WorkerMethod)


def pickled_once(fn: Callable[..., Any]) -> bytes:
    """The bytes of a handle or a handle's method sent as a job's function: stable, made once.

    Stable bytes let the process backend key the function, so each worker unpickles it once.
    A handle called as a function travels as its instance's ``__call__``.
    """
    method = _recipe_of(fn).method("__call__") if type(fn) is PerWorker else fn
    assert type(method) is WorkerMethod, "only for the types in PICKLED_ONCE"
    try:
        return method.pickled()
    except Exception as exc:  # named from the handle: "fn.<per_worker args[0]>"
        raise explain_failure(fn, "fn", exc) from exc


def bound(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For a ``map`` chunk: the calling worker's own bound method, looked up once for all items.

    Anything but a handle or its method is returned as it is. May raise PerWorkerError (the
    factory failed): the chunk then fails that item and looks again for the next.
    """
    if type(fn) is WorkerMethod:
        return fn.bind()
    if type(fn) is PerWorker:
        return _instances.current().get(_recipe_of(fn))  # type: ignore[no-any-return]
    return fn


def _recipe_of(handle: PerWorker) -> Recipe:
    return object.__getattribute__(handle, "_PerWorker__recipe")  # type: ignore[no-any-return]


def travelled() -> bool:
    """Whether any handle was pickled in this process (see ``_dask._per_worker``)."""
    return _travelled


def _recipe(token: bytes, data: bytes, factory_name: str) -> Recipe:
    """The process's one Recipe for ``token``: restoring a handle again is a dict lookup."""
    recipe = _recipes.get(token)
    if recipe is None:
        with _recipes_lock:
            recipe = _recipes.get(token)
            if recipe is None:
                recipe = _recipes[token] = Recipe(token, factory_name, None, data)
    return recipe


def _restore_handle(token: bytes, data: bytes, factory_name: str) -> PerWorker:
    return PerWorker(_recipe(token, data, factory_name))


def _restore_method(token: bytes, data: bytes, factory_name: str, name: str) -> WorkerMethod:
    return _recipe(token, data, factory_name).method(name)


def _name_of(factory: Callable[..., Any]) -> str:
    """``module.qualname`` of the factory, for messages; never its arguments (secrets)."""
    func = getattr(factory, "func", None)  # functools.partial
    if func is not None and callable(func) and not hasattr(factory, "__qualname__"):
        return f"{type(factory).__name__}({_name_of(func)}, ...)"
    qualname = getattr(factory, "__qualname__", None)
    if not isinstance(qualname, str):
        return f"a {type(factory).__qualname__} object"
    module = getattr(factory, "__module__", None)
    if not isinstance(module, str) or module == "builtins":
        return qualname
    return f"{module}.{qualname}"
