"""A broker's refusal while provisioning: retriable codes make a starting service wait (the
runtime retries a ProvisioningTimeout), anything else is a real misconfiguration that stops it."""

from __future__ import annotations

from aiguillage_common.provisioning import ProvisioningError, ProvisioningTimeout, _failure

REQUEST_TIMED_OUT, NOT_CONTROLLER, INVALID_CONFIG, POLICY_VIOLATION = 7, 41, 40, 44


def test_retriable_codes_only_are_waited_for() -> None:
    assert isinstance(_failure([REQUEST_TIMED_OUT, NOT_CONTROLLER], "m"), ProvisioningTimeout)
    final = _failure([REQUEST_TIMED_OUT, INVALID_CONFIG], "m")
    assert isinstance(final, ProvisioningError)
    assert not isinstance(final, ProvisioningTimeout)
    assert not isinstance(_failure([POLICY_VIOLATION], "m"), ProvisioningTimeout)
