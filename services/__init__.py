# Makes test module names unique across services (services.<svc>.tests...) for pytest.
