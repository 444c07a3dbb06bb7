"""The lab stack: configuration shared by both launchers, and the native launcher."""
