//! utp-examples: the `utpcat` command and runnable examples of this project.
