"""REST routes: authenticate, call one service function, return a schema."""
