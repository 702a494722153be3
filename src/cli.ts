export async function main(argv: string[]): Promise<void> { console.log('hello', process.version, argv.slice(2)); }
