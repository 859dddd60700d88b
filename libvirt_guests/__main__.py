from libvirt_guests.cli import run

run()
