"""Cloud credentials and the pilot proxy.

``resolve`` (the Secret, either format) and ``ini`` (``cloud.auth``) give credentials;
``proxyfiles`` keeps the private file behind ``secret = PROXY``; ``bundled`` finds the
pilot proxy; ``chain`` parses it and ``proxy`` turns it into status, a condition and the
"expired proxy starts no pilot" decision. ``errors`` holds what they raise.
"""
