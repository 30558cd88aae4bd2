"""Every error of the supervisor package is at its front door and says when it is raised
(``__all__`` of every module: ``tests/test_all_attributes.py``)."""

from __future__ import annotations


def test_every_error_of_the_package_is_at_its_front_door_and_says_when_it_is_raised() -> None:
    import warden.supervisor as front
    from warden.supervisor import errors

    for name in errors.__all__:
        error = getattr(errors, name)
        assert getattr(front, name) is error
        assert issubclass(error, errors.SupervisorError)
        if name not in ("SupervisorError", "LimitReachedError"):  # roots: never raised
            assert "Raised when" in (error.__doc__ or ""), name
