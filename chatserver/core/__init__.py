"""The chat core: users, rooms, accounts and history, with no knowledge of any wire format."""
