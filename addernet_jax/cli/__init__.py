"""The entry points' logic, one module each (train, evaluate, convert, count_ops), and the
command-line convention they share (`common`). The scripts at the repository root only call
`main()` here."""
