import { storeContract } from './store.contract.ts'

storeContract('postgres')
