"""What lets someone in: the service password and the only form of it the container
gets, its bcrypt hash (`credentials`), and the edge's certificate, the instance's own CA
or the user's (`tls`).
"""
