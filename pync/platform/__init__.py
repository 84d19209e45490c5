"""What differs between Linux, macOS and Windows, behind one interface."""
