"""Every exception class of the installed ``anthropic`` SDK maps to our ``ModelError`` tree.

The classes are found by introspection: every submodule of the SDK is imported, then
``AnthropicError``'s subclasses are walked. Each must be listed in ``EXPECTED`` below, a
reviewed inventory of what it becomes; a class the SDK adds in an upgrade fails
``test_every_sdk_error_class_is_in_the_inventory`` until someone decides its mapping
(and, if the rules in ``actors/anthropic_model.py`` do not already give it, changes them).
An entry for a class the SDK no longer has fails ``test_inventory_has_no_stale_entries``.

Instances are built the way the SDK builds them: status errors around an ``httpx2``
response (the HTTP library SDK 2.x uses; 1.x used ``httpx``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import warnings

import anthropic
import httpx2
import pytest

from actors.anthropic_model import translate_sdk_error
from actors.errors import (
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)

MODEL = "claude-test-model"
SECRET = "sk-ant-test-SECRET-in-the-body"

RATE_LIMITED: frozenset[str] = frozenset(
    {
        "RateLimitError",  # 429
        "RampLimitExceededError",  # 429: usage grew faster than the org's ramp allows
        "OverloadedError",  # 529
        "CompactionUnavailableError",  # 529
    }
)

UNAVAILABLE: frozenset[str] = frozenset(
    {
        "APIError",  # no status: an error the provider reported outside an HTTP status
        "APIConnectionError",
        "APITimeoutError",
        "APIResponseValidationError",  # the provider sent a reply of the wrong shape
        "RetryableError",  # a retryable failure left after the SDK's own retries
        "RequestTimeoutError",  # 408
        "ClientClosedRequestError",  # 499
        "InternalServerError",  # 5xx without a class of its own (built as 502)
        "ServiceUnavailableError",  # 503
        "CMEKContextUnavailableError",  # 503
        "CMEKKeyUnreachableError",  # 503
        "BetaRegistrationPendingError",  # 503
        "GatewayTimeoutError",  # 504
    }
)

REQUEST: frozenset[str] = frozenset(
    {
        # the SDK used wrongly or configured wrongly: retrying does not repair it
        "AnthropicError",
        "APIWebhookValidationError",
        "CredentialsError",
        "IdentityTokenFileError",
        "WorkloadIdentityError",
        "MissingDependencyError",
        "MutuallyExclusiveAuthError",
        "StreamAlreadyConsumed",
        "ToolsetUsageError",
        "ToolsetClosedError",
        "ToolsetConfigError",
        "ToolsetContractError",
        "ToolsetsFixedError",
        "AsyncOnSyncToolsetError",
        "SyncOnAsyncToolsetError",
        "NestedCallError",
        "BrowserStateError",
        # 4xx without a class of its own (built as 418)
        "APIStatusError",
        # 400
        "BadRequestError",
        "AlreadyMemberError",
        "AvailableToolsLimitExceededError",
        "BetaBundleAttachmentNotSupportedError",
        "BetaBundleOnCallError",
        "BetaCMEKFeatureUnsupportedError",
        "BetaCannotSignOutPrimaryOwnerError",
        "BetaCannotSignOutSelfError",
        "BetaEnvironmentArchivedError",
        "BetaInvalidConfigTypeChangeError",
        "BetaInvalidMetadataError",
        "BetaOrganizationNotEnrolledInBetaError",
        "BetaRBACGroupOrderLimitExceededError",
        "BetaRequestBodyTimeoutError",
        "BetaScanFailedError",
        "BetaSettingsDocumentLimitExceededError",
        "BetaSettingsHistoryLimitExceededError",
        "BetaSlackChannelSetUpSettingsRefusedError",
        "BetaUnsupportedCharsetError",
        "CMEKKeyDisabledError",
        "CMEKKeyNetworkBlockedError",
        "CannotInviteEmailsWithUnverifiedDomainsError",
        "CannotRemoveLastMemberError",
        "ClaudeCodeKeyCreatorNotMemberError",
        "ClaudeCodeVersionTooOldError",
        "CompactionBlockAmbiguousError",
        "CompactionBlockMisplacedError",
        "CompactionContentMismatchError",
        "CompactionIncompleteTurnError",
        "CompactionNothingToSummarizeError",
        "CompactionSignatureInvalidError",
        "CompactionTooManyToolReferencesError",
        "CompactionToolChangesMismatchError",
        "EmailDomainNotAllowedError",
        "ExternalKeyInWorkspacePolicyError",
        "ExternalKeyValidationFailedError",
        "ExternalKeyValidationTimedOutError",
        "FileNotDownloadableError",
        "ImageDimensionsTooLargeError",
        "InviteAlreadyExistsError",
        "KeyProfileMismatchError",
        "OrgAPIKeyLimitExceededError",
        "OrgMemberLimitExceededError",
        "OrganizationOnHoldError",
        "OrganizationTypeNotSupportedError",
        "ParentOrganizationRequiredError",
        "RBACGroupGrantsOwnerAccessError",
        "RBACGroupOwnerAccessUnconfirmedError",
        "RequestBodyEncodingInvalidError",
        "RequestBodyEncodingUnsupportedError",
        "StorageQuotaExceededError",
        "ThreadAlreadyContinuedError",
        "ThreadContinueInFlightError",
        "ThreadFingerprintMismatchError",
        "ThreadUnsupportedRequestError",
        "ToolNameConflictError",
        "ToolReferenceUnresolvedError",
        "UserProfileNotFoundError",
        "UserProfileRequiredError",
        "WorkspaceAPIKeyLimitExceededError",
        "WorkspaceMemberLimitExceededError",
        "WorkspacePolicyViolationError",
        # 401
        "AuthenticationError",
        # 402
        "PaymentRequiredError",
        "LinkedOrganizationBillingUnavailableError",
        "LinkedOrganizationSpendLimitReachedError",
        # 403
        "PermissionDeniedError",
        "BetaAPIKeyScopeMissingError",
        "BetaCannotSignOutManagedMemberError",
        "BetaCannotSignOutMembershipAdminError",
        "BetaCannotSignOutOwnerError",
        "BetaCannotSignOutPrivilegedMemberError",
        "BetaClaudeTagWritesNotEnabledError",
        "BetaComplianceConfigurationRestrictedError",
        "BetaEnvironmentCreateDisabledError",
        "BetaEnvironmentUpdateDisabledError",
        "BetaOrganizationLevelScopedAPIKeyRequiredError",
        "BetaSpendLimitsAdminAPIWritesNotEnabledError",
        "SandboxEgressRestrictedError",
        "UserProfileBillingNotAuthorizedError",
        "UserProfileNotBillableError",
        # 404
        "NotFoundError",
        "BetaEnvironmentNotFoundError",
        "BetaRBACGroupManagedSettingsNotFoundError",
        "BetaRBACGroupNotFoundError",
        "BetaSlackChannelSetUpEnvironmentNotFoundError",
        "FileExpiredError",
        "RBACRoleNotFoundError",
        "ThreadNotFoundError",
        # 409 (the SDK itself retries 409 before giving up)
        "ConflictError",
        "BetaPluginNameTakenError",
        "BetaScanPendingError",
        "BetaSkillNameTakenError",
        "BetaSlackChannelSetUpSettingsConflictError",
        "ConcurrentMembershipChangeError",
        "ExternalKeyChangedError",
        "SkillReadBlockedUndecryptableError",
        # 412, 413, 422, 431
        "PreconditionFailedError",
        "BetaHeartbeatPreconditionFailedError",
        "ContentTooLargeError",
        "RequestBodyTooLargeAfterDecodingError",
        "UnprocessableEntityError",
        "RequestHeaderFieldsTooLargeError",
        # 429 spend caps: they do not lift within any retry window
        "ContractSpendLimitReachedError",
        "EnforcedSpendLimitReachedError",
        # 501: the endpoint lacks the feature
        "HTTPNotImplementedError",
    }
)

EXPECTED: dict[str, type[ModelError]] = {
    **dict.fromkeys(RATE_LIMITED, ModelRateLimitedError),
    **dict.fromkeys(UNAVAILABLE, ModelUnavailableError),
    **dict.fromkeys(REQUEST, ModelRequestError),
}

STATUS_OF_CLASSES_WITHOUT_ONE = {"APIStatusError": 418, "InternalServerError": 502}


@functools.cache
def sdk_error_classes() -> dict[str, type[anthropic.AnthropicError]]:
    """Every ``AnthropicError`` class of the installed SDK, by name.

    Imports every submodule first, so classes of modules ``import anthropic`` does not
    load are found too; submodules whose optional dependencies are missing are skipped.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in pkgutil.walk_packages(anthropic.__path__, "anthropic."):
            try:
                importlib.import_module(info.name)
            except ImportError:
                continue
    found: dict[str, type[anthropic.AnthropicError]] = {}
    pending: list[type[anthropic.AnthropicError]] = [anthropic.AnthropicError]
    while pending:
        cls = pending.pop()
        other = found.setdefault(cls.__name__, cls)
        assert other is cls, f"two SDK error classes named {cls.__name__!r}: {other}, {cls}"
        pending.extend(sub for sub in cls.__subclasses__() if sub.__name__ not in found)
    return found


def status_of(cls: type[anthropic.APIStatusError]) -> int:
    status = getattr(cls, "status_code", None)
    if isinstance(status, int):
        return status
    return STATUS_OF_CLASSES_WITHOUT_ONE[cls.__name__]


def build(cls: type[anthropic.AnthropicError], message: str) -> anthropic.AnthropicError:
    """An instance of ``cls``, constructed as the SDK constructs it."""
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    if issubclass(cls, anthropic.APIStatusError):
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        response = httpx2.Response(
            status_of(cls), request=request, json=body, headers={"request-id": "req_42"}
        )
        return cls(f"Error code: {response.status_code} - {body}", response=response, body=body)
    if issubclass(cls, anthropic.APIResponseValidationError):
        return cls(httpx2.Response(200, request=request, json={}), body={}, message=message)
    if issubclass(cls, anthropic.APITimeoutError):
        return cls(request)
    if issubclass(cls, anthropic.APIConnectionError):
        return cls(message=message, request=request)
    if issubclass(cls, anthropic.APIError):
        return cls(message, request, body=None)
    # The SDK's other errors take a message, nothing, or keyword-only details.
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except ValueError:  # no __init__ of its own: Exception's, which takes a message
        return cls(message)
    args = [
        message
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    kwargs = {
        p.name: message for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    }
    return cls(*args, **kwargs)


def test_every_sdk_error_class_is_in_the_inventory() -> None:
    unknown = sorted(set(sdk_error_classes()) - set(EXPECTED))
    assert not unknown, (
        f"anthropic {anthropic.__version__} has error classes nobody has mapped: {unknown}; "
        "decide what each becomes and add it to RATE_LIMITED, UNAVAILABLE or REQUEST"
    )


def test_inventory_has_no_stale_entries() -> None:
    assert not RATE_LIMITED & UNAVAILABLE
    assert not RATE_LIMITED & REQUEST
    assert not UNAVAILABLE & REQUEST
    stale = sorted(set(EXPECTED) - set(sdk_error_classes()))
    assert not stale, f"the inventory lists classes the SDK no longer has: {stale}"


@pytest.mark.parametrize("name", sorted(sdk_error_classes()))
def test_sdk_error_class_maps_to_its_model_error_with_the_right_retryable_flag(
    name: str,
) -> None:
    cls = sdk_error_classes()[name]
    expected = EXPECTED.get(name)
    if expected is None:
        pytest.fail(f"{name} is not in the inventory (see the module docstring)")
    exc = build(cls, "the SDK says no")

    error = translate_sdk_error(exc, model=MODEL)

    assert type(error) is expected
    assert error.retryable is (expected is not ModelRequestError)
    assert error.model == MODEL
    if isinstance(exc, anthropic.APIStatusError):
        assert error.status == exc.status_code
        assert "the SDK says no" in error.problem
        assert "req_42" in error.problem
    elif not isinstance(exc, anthropic.APIResponseValidationError):
        assert error.status is None


@pytest.mark.parametrize(
    "exc",
    [
        anthropic.BadRequestError(
            "Error code: 400",
            response=httpx2.Response(
                400,
                request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
                json={"error": {"type": "invalid_request_error", "message": f"key {SECRET}"}},
            ),
            body={"error": {"type": "invalid_request_error", "message": f"key {SECRET}"}},
        ),
        anthropic.APIError(
            f"stream error mentioning {SECRET}",
            httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
            body=None,
        ),
        anthropic.CredentialsError(f"could not use {SECRET}"),
    ],
    ids=["status-error-body", "api-error-message", "credentials-error"],
)
def test_secrets_are_scrubbed_from_the_problem_text(exc: anthropic.AnthropicError) -> None:
    error = translate_sdk_error(exc, model=MODEL, secrets=[SECRET])

    assert SECRET not in str(error)
    assert "[redacted]" in error.problem


def test_problem_text_is_one_short_line() -> None:
    body = "<html>\n" + "x" * 5000 + "\n</html>"
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    exc = anthropic.InternalServerError(
        "Error code: 502", response=httpx2.Response(502, request=request, text=body), body=body
    )

    error = translate_sdk_error(exc, model=MODEL)

    assert "\n" not in error.problem
    assert len(error.problem) <= 300
