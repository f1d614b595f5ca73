"""Authentication and transport security: the token file, step tokens, the caller
check the interceptor runs on every call, and TLS credentials."""
