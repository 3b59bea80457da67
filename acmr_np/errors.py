"""The one exception type for bad input.

Anything a user can get wrong (a missing file, a label out of range, a batch size
larger than the data) raises ``InputError`` with a message that names the thing and
what was expected. The command-line tools print that message as a single line and exit
with status 2; a traceback is kept for bugs in the package itself.
"""


class InputError(ValueError):
    """Bad input from the user: the message alone says what is wrong and where."""


def input_error(message):
    """An InputError whose message is one line: runs of whitespace (the newlines in
    other libraries' exception texts among them) become single spaces."""
    return InputError(" ".join(str(message).split()))
