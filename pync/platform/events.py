"""The interest a wait can have in a descriptor (the values are selectors')."""

EVENT_READ = 1
EVENT_WRITE = 2
