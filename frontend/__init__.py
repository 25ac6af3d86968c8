"""The browser UI: server-rendered pages plus a little plain JS, served by Django."""
