"""HTTP edge: the app factory, middleware, problem documents and one router per domain."""
