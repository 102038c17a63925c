-- {name} is a quoted identifier; template0 so nothing from template1 leaks into the check.
CREATE DATABASE {name} TEMPLATE template0;
