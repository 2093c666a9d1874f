"""`saegap sql` and `saegap export`: the store's console commands."""
