"""The fault tests share the sync tests' 3-VM deployment fixture."""

from tests.e2e.conftest import built_selftest  # noqa: F401
from tests.sync.conftest import vms  # noqa: F401
