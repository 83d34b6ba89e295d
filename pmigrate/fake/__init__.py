"""The parts of 'pmigrate fakedb': table shapes, row generation, blobs, bulk writes."""
