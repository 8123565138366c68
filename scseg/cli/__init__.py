"""Command-line faces of scseg. ``scseg-gates`` lives here; the other commands will move here too."""
