/*
 * libfakever.so - a libwebsockets that says it is version 3.2.0 (tests/integration/test_shim_lws.py).
 *
 * Preloaded before the shim, its lws_get_library_version() is the one the shim finds; every
 * other lws function comes from the real libwebsockets this library depends on.  The shim must
 * then refuse to observe (a version it does not know) and pass everything through.
 */
const char *lws_get_library_version(void)
{
	return "3.2.0-fake";
}
