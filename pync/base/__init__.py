"""The vocabulary every layer shares: Options, nc's messages and errors,
frozen records, strtonum().  Imports nothing else of pync."""
