//! Bad-input matrix and SIGKILL crash-safety tests over the CLI (issue 8).
