# Fixtures come from fn_core.testing (a pytest11 plugin); this file keeps the tests' rootdir.
