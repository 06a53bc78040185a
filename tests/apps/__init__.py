"""Worker apps that the durability tests run in subprocesses
(``python -m stackshift worker tests.apps.<module>:app``)."""
