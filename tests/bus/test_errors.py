"""Every nats-py exception class is translated into our tree, deliberately."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

import nats.errors
import nats.js.errors
import pytest
from warden.bus.errors import (
    TRANSLATIONS,
    BusConnectionError,
    BusError,
    BusTimeoutError,
    EmbeddedServerError,
    JetStreamError,
    NoRespondersError,
    PublishError,
    translate,
)

SDK_MODULES = (nats.errors, nats.js.errors)


def _exported_exception_classes(module: ModuleType) -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]


SDK_CLASSES = [cls for module in SDK_MODULES for cls in _exported_exception_classes(module)]


def _instance(cls: type[BaseException]) -> BaseException:
    # Some SDK errors require constructor arguments; build them without running
    # __init__ so that the test does not have to know every signature (and translate
    # must cope with half-initialised errors whose __str__ breaks).
    try:
        return cls()
    except TypeError:
        return cls.__new__(cls)


def test_sdk_exports_exception_classes_at_all() -> None:
    # Guards the introspection below: an empty list would make the next test vacuous.
    assert len(SDK_CLASSES) > 40
    assert nats.errors.NoRespondersError in SDK_CLASSES
    assert nats.js.errors.FetchTimeoutError in SDK_CLASSES


def test_every_sdk_exception_class_has_its_own_translation() -> None:
    unmapped = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in SDK_CLASSES if c not in TRANSLATIONS
    )
    assert not unmapped, f"nats-py exception classes without a translation: {unmapped}"


@pytest.mark.parametrize("cls", SDK_CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_sdk_exception_translates_to_its_mapped_class(cls: type[BaseException]) -> None:
    target, retryable = TRANSLATIONS[cls]
    translated = translate(_instance(cls), operation="request", subject="warden.x")
    assert type(translated) is target
    assert translated.retryable is retryable
    assert translated.operation == "request"
    assert str(translated)  # builds its own message, even from a broken __str__


@pytest.mark.parametrize(
    ("exc", "target", "retryable"),
    [
        (nats.errors.TimeoutError(), BusTimeoutError, True),
        (nats.errors.NoRespondersError(), NoRespondersError, True),
        (nats.errors.ConnectionClosedError(), BusConnectionError, False),
        (nats.errors.AuthorizationError(), BusConnectionError, False),
        (nats.errors.MaxPayloadError(), PublishError, False),
        (nats.js.errors.NoStreamResponseError(), PublishError, True),
        (nats.js.errors.ServiceUnavailableError(code=503), JetStreamError, True),
        (nats.js.errors.NotFoundError(code=404, err_code=10059), JetStreamError, False),
        (TimeoutError(), BusTimeoutError, True),
        (ConnectionRefusedError(), BusConnectionError, True),
        (ValueError("boom"), BusError, False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_common_failures_translate_to_the_documented_class_and_retryability(
    exc: BaseException, target: type[BusError], retryable: bool
) -> None:
    translated = translate(exc)
    assert type(translated) is target
    assert translated.retryable is retryable


def test_a_subclass_unknown_to_the_table_is_translated_through_its_parent() -> None:
    class FutureTimeout(nats.errors.TimeoutError):
        pass

    assert type(translate(FutureTimeout())) is BusTimeoutError


def test_jetstream_errors_carry_the_server_codes() -> None:
    exc = nats.js.errors.BadRequestError(code=400, err_code=10058, description="conflict")
    translated = translate(exc, operation="ensure stream", subject="WARDEN_TASKS")
    assert isinstance(translated, JetStreamError)
    assert (translated.code, translated.err_code) == (400, 10058)
    assert "'WARDEN_TASKS'" in str(translated) and "10058" in str(translated)


def test_timeout_message_names_subject_and_deadline() -> None:
    translated = translate(
        nats.errors.TimeoutError(), operation="request", subject="warden.work.code", timeout=2.5
    )
    assert isinstance(translated, BusTimeoutError)
    assert translated.timeout == 2.5
    assert str(translated).startswith("request on 'warden.work.code' timed out after 2.5s")


def test_our_own_errors_pass_through_unchanged() -> None:
    original = PublishError("refused", operation="publish", subject="a.b")
    assert translate(original) is original


def test_embedded_server_error_message_includes_the_log_tail(tmp_path: Path) -> None:
    err = EmbeddedServerError("exited with status 1", data_dir=tmp_path, log_tail="[FTL] boom")
    assert str(tmp_path) in str(err) and "[FTL] boom" in str(err)
    assert err.retryable is False
