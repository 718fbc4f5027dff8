"""The web app over an embedded catalog: search page and listening test."""
